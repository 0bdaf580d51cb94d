//! Minting: from what a content platform pastes (a note id or note URL, a
//! creator id, a product URL or share text) to a signed tracked link. Shared by
//! `POST /v1/links` and `linkloop mint`, so both give the same answers and errors.

use serde::Serialize;

use super::{LinkClaims, encode};
use crate::note;
use crate::platform;
use crate::signing::Keyring;

/// A mint request. All inputs are untrusted text.
#[derive(Debug, Clone, Default)]
pub struct MintRequest<'a> {
    /// Bare 24-hex RED note id, or any RED note URL / share text.
    pub note: &'a str,
    /// Creator id, `[A-Za-z0-9_.-]{1,64}`.
    pub creator_id: &'a str,
    /// Any Taobao/Tmall/JD product URL or share text.
    pub url: &'a str,
    /// Optional campaign tag, `[A-Za-z0-9_.-]{1,32}`.
    pub campaign: Option<&'a str>,
}

/// Why minting failed: the field, a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MintError {
    /// Request field at fault: `note_id`, `creator_id`, `url` or `campaign`.
    pub field: &'static str,
    /// Stable code: an input error kind (`short_link`, `untrusted_host`, …) or `invalid_{field}`.
    pub code: &'static str,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// A minted link: the `POST /v1/links` response body and `linkloop mint --json` output.
///
/// Item and SKU ids are decimal *strings*: SKU ids reach 19 digits, past the
/// 2^53 that JSON numbers keep exactly in JavaScript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minted {
    /// Full tracked-link URL: `{public_url}/j/{link}`.
    pub link: String,
    /// `taobao`, `tmall` or `jd`.
    pub platform: &'static str,
    /// Item id (JD: SKU id), decimal string.
    pub item_id: String,
    /// SKU id when the product URL named one, decimal string, else null.
    pub sku_id: Option<String>,
    /// The 24-hex note id the link is attributed to.
    pub note_id: String,
}

/// Parses the inputs, signs the claims with the active link key, and returns the link.
///
/// `now_s` is the mint time, Unix seconds. Errors: [`MintError`] naming the field.
pub fn mint(req: &MintRequest<'_>, keys: &Keyring, public_url: &str, now_s: u32) -> Result<Minted, MintError> {
    let note = note::parse_note(req.note).map_err(|e| MintError {
        field: "note_id",
        code: e.kind().as_str(),
        message: e.to_string(),
    })?;
    let product = platform::parse_product(req.url).map_err(|e| MintError {
        field: "url",
        code: e.kind().as_str(),
        message: e.to_string(),
    })?;
    let claims = LinkClaims {
        note_id: note.as_str().to_owned(),
        creator_id: req.creator_id.to_owned(),
        product,
        campaign: req.campaign.map(str::to_owned),
        issued_at: now_s,
    };
    let token = encode(&claims, keys).map_err(|e| MintError {
        field: e.field,
        code: match e.field {
            "creator_id" => "invalid_creator_id",
            "campaign" => "invalid_campaign",
            _ => "invalid_note_id",
        },
        message: e.message.to_owned(),
    })?;
    Ok(Minted {
        link: format!("{public_url}/j/{token}"),
        platform: product.platform.as_str(),
        item_id: product.item_id.to_string(),
        sku_id: product.sku_id.map(|s| s.to_string()),
        note_id: claims.note_id,
    })
}
