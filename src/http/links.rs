//! `POST /v1/links`: mint a tracked link (admin bearer token).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Admin;
use super::error::{ApiError, RawBody, parse_json, require_json};
use crate::app::AppState;
use crate::link::{MintRequest, mint};

/// Request body of `POST /v1/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// Bare 24-hex RED note id, or a RED note URL / share text.
    pub note_id: String,
    /// Creator id, `[A-Za-z0-9_.-]{1,64}`.
    pub creator_id: String,
    /// Taobao/Tmall/JD product URL or share text.
    pub url: String,
    /// Optional campaign tag.
    pub campaign: Option<String>,
}

/// `201 {link, platform, item_id, sku_id, note_id}`; `400` naming the field;
/// `401` without the admin token.
pub async fn create_link(
    _: Admin,
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // `Admin` authenticated before the body was read.
    require_json(&headers)?;
    let body: CreateLink = parse_json(&body)?;
    let req = MintRequest {
        note: &body.note_id,
        creator_id: &body.creator_id,
        url: &body.url,
        campaign: body.campaign.as_deref(),
    };
    let now_s = u32::try_from(crate::click::now_ms() / 1000).unwrap_or(u32::MAX);
    let minted = mint(&req, &app.link_keys, &app.public_url, now_s)
        .map_err(|e| ApiError::field(e.field, e.code, e.to_string()))?;
    app.metrics.links_minted.inc();
    Ok((StatusCode::CREATED, axum::Json(minted)).into_response())
}
