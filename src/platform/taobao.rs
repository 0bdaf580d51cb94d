//! Taobao and Tmall (Alibaba): their trusted hosts, URL forms, short and affiliate links.
//!
//! Owns: turning a vetted [`Address`] on an Alibaba host into a [`Product`]. Taobao and Tmall
//! share one module because they share their link infrastructure (`s.click.taobao.com`,
//! `uland.taobao.com`, `m.tb.cn`, the `tbopen://` app link) and their id conventions (`id`
//! and `skuId` query parameters). Never does I/O, never follows a short link.
//!
//! Product URL forms accepted (exact hosts only):
//!
//! | host | form | platform |
//! |---|---|---|
//! | `item.taobao.com` | `/item.htm?id=<id>` | Taobao |
//! | `h5.m.taobao.com` | `/awp/core/detail.htm?id=<id>` | Taobao |
//! | `main.m.taobao.com` | `/security-h5-detail/home?id=<id>`, `/detail/index.html?id=<id>` | Taobao |
//! | `market.m.taobao.com` | `/app/…?itemId=<id>` | Taobao |
//! | `a.m.taobao.com` | `/i<id>.htm` | Taobao |
//! | `world.taobao.com` | `/item/<id>.htm` | Taobao |
//! | `detail.tmall.com`, `detail.m.tmall.com`, `chaoshi.detail.tmall.com` | `/item.htm?id=<id>` | Tmall |
//! | `detail.tmall.hk`, `detail.m.tmall.hk` | `/item.htm?id=<id>`, `/hk/item.htm?id=<id>` | Tmall |
//! | `world.tmall.com` | `/item/<id>.htm` | Tmall |
//! | `tbopen://m.taobao.com/…?h5Url=<encoded web URL>` | the web URL, decoded once | per web URL |
//! | `taobao://<host>/…` | as the web form on that host | per host |
//! | `tmall://page.tm/itemDetail?id=<id>` | | Tmall |
//!
//! A `skuId` query parameter, when present and valid, becomes [`Product::sku_id`].
//! Any other `*.tb.cn` host, and `s.click.taobao.com/<code>`, is a short link;
//! `s.click.taobao.com/t?e=…`, `uland.taobao.com` and `click.simba.taobao.com` are
//! affiliate/ad links. Any other page under `taobao.com`, `tmall.com` or `tmall.hk` is
//! not a product page.

use super::address::{Address, Scheme};
use super::error::InputError;
use super::forms::{PathForm, id_from_path, id_from_query, not_product_page, sku_from_query};
use super::{Platform, Product};

/// Domains of the Alibaba marketplaces: a host equal to or under one of them is "known"
/// (a wrong page there is `NotProduct`, not `UntrustedHost`). Never used to accept an id.
const FAMILY: [&str; 4] = ["taobao.com", "tmall.com", "tmall.hk", "tb.cn"];

/// Words used in messages.
const FAMILY_NAME: &str = "Taobao/Tmall";

/// Classifies a web (`http`/`https`, or `taobao://`) address. `None` when the host is not an
/// Alibaba host at all.
pub(super) fn classify_web(addr: &Address) -> Option<Result<Product, InputError>> {
    use Platform::{Taobao, Tmall};
    let path = addr.path();
    let result = match addr.host() {
        "s.click.taobao.com" => {
            // `/t?e=…` (and `/t_js…`) is the affiliate click; any other path is a short code.
            if path == "/t" || path.starts_with("/t_") {
                Err(InputError::affiliate_link(addr.host()))
            } else {
                Err(InputError::short_link(addr.host(), "product"))
            }
        }
        "uland.taobao.com" | "click.simba.taobao.com" => Err(InputError::affiliate_link(addr.host())),
        "item.taobao.com" => query_form(addr, Taobao, &["/item.htm"], "id"),
        "h5.m.taobao.com" => query_form(addr, Taobao, &["/awp/core/detail.htm"], "id"),
        "main.m.taobao.com" => query_form(addr, Taobao, &["/security-h5-detail/home", "/detail/index.html"], "id"),
        "market.m.taobao.com" if path.starts_with("/app/") => match addr.param("itemId") {
            Ok(Some(_)) => query_form(addr, Taobao, &[path], "itemId"),
            Ok(None) => Err(not_product_page(addr, FAMILY_NAME)),
            Err(e) => Err(e),
        },
        "a.m.taobao.com" => path_form(addr, Taobao, &[("/i", ".htm")]),
        "world.taobao.com" => path_form(addr, Taobao, &[("/item/", ".htm")]),
        "detail.tmall.com" | "detail.m.tmall.com" | "chaoshi.detail.tmall.com" => {
            query_form(addr, Tmall, &["/item.htm"], "id")
        }
        "detail.tmall.hk" | "detail.m.tmall.hk" => query_form(addr, Tmall, &["/item.htm", "/hk/item.htm"], "id"),
        "world.tmall.com" => path_form(addr, Tmall, &[("/item/", ".htm")]),
        _ if addr.host_under(&["tb.cn"]) => Err(InputError::short_link(addr.host(), "product")),
        _ if addr.host_under(&FAMILY) => Err(not_product_page(addr, FAMILY_NAME)),
        _ => return None,
    };
    Some(result)
}

/// Classifies a Taobao/Tmall app link (`tbopen:`, `taobao:`, `tmall:`).
pub(super) fn classify_app(addr: &Address) -> Result<Product, InputError> {
    match addr.scheme() {
        Scheme::TbOpen if addr.host() == "m.taobao.com" => {
            let Some(h5) = addr.param("h5Url")? else {
                return Err(InputError::not_product(
                    "Taobao app link without a product page (no h5Url): open it in the app and copy the product URL",
                ));
            };
            // One level only: the nested URL must be a plain web URL on an Alibaba host.
            let inner = Address::parse(&h5)?;
            if !inner.scheme().is_web() {
                return Err(InputError::malformed("Taobao app link wraps another app link: paste the product URL"));
            }
            classify_web(&inner).unwrap_or_else(|| Err(untrusted(&inner)))
        }
        Scheme::Taobao => classify_web(addr).unwrap_or_else(|| Err(untrusted(addr))),
        Scheme::Tmall if addr.host() == "page.tm" => query_form(addr, Platform::Tmall, &["/itemDetail"], "id"),
        _ => Err(InputError::not_product(format!(
            "Taobao/Tmall app link to {} is not a product page: open it in the app and copy the product URL",
            super::forms::where_(addr)
        ))),
    }
}

fn untrusted(addr: &Address) -> InputError {
    InputError::untrusted_host(addr.host(), super::PRODUCT_HOSTS)
}

/// A page whose path is one of `paths` and whose item id is query parameter `key`.
fn query_form(addr: &Address, platform: Platform, paths: &[&str], key: &str) -> Result<Product, InputError> {
    if !paths.contains(&addr.path()) {
        return Err(not_product_page(addr, FAMILY_NAME));
    }
    let item_id = id_from_query(addr, key, FAMILY_NAME)?;
    Ok(Product { platform, item_id, sku_id: sku_from_query(addr) })
}

/// A page whose item id is a path slot.
fn path_form(addr: &Address, platform: Platform, forms: &[PathForm]) -> Result<Product, InputError> {
    match id_from_path(addr.path(), forms) {
        Some(Ok(item_id)) => Ok(Product { platform, item_id, sku_id: sku_from_query(addr) }),
        Some(Err(e)) => Err(e),
        None => Err(not_product_page(addr, FAMILY_NAME)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::InputErrorKind::{self, *};

    fn parse(url: &str) -> Result<Product, InputErrorKind> {
        let addr = Address::parse(url).map_err(|e| e.kind())?;
        let r = match addr.scheme() {
            s if s.is_web() => classify_web(&addr).unwrap_or(Err(untrusted(&addr))),
            _ => classify_app(&addr),
        };
        r.map_err(|e| e.kind())
    }

    fn product(platform: Platform, item_id: u64, sku_id: Option<u64>) -> Product {
        Product { platform, item_id, sku_id }
    }

    #[test]
    fn forms() {
        use Platform::*;
        assert_eq!(parse("https://item.taobao.com/item.htm?id=1&skuId=2"), Ok(product(Taobao, 1, Some(2))));
        assert_eq!(parse("https://detail.tmall.hk/hk/item.htm?id=3&skuId=x"), Ok(product(Tmall, 3, None)));
        assert_eq!(parse("https://a.m.taobao.com/i4.htm"), Ok(product(Taobao, 4, None)));
        assert_eq!(parse("https://world.tmall.com/item/5.htm"), Ok(product(Tmall, 5, None)));
        assert_eq!(parse("tmall://page.tm/itemDetail?id=6"), Ok(product(Tmall, 6, None)));
        assert_eq!(parse("taobao://item.taobao.com/item.htm?id=7"), Ok(product(Taobao, 7, None)));
        assert_eq!(
            parse("tbopen://m.taobao.com/tbopen/index.html?h5Url=https%3A%2F%2Fdetail.tmall.com%2Fitem.htm%3Fid%3D8"),
            Ok(product(Tmall, 8, None))
        );
    }

    #[test]
    fn hostile() {
        for (url, want) in [
            ("https://item.taobao.com.evil.cn/item.htm?id=1", None),
            ("https://evil-taobao.com/item.htm?id=1", None),
            ("https://item.taobao.com/item.htm#id=1", Some(NotProduct)),
            ("https://item.taobao.com/item.htm?id=01", Some(Malformed)),
            ("https://item.taobao.com/item.htm?id=1%20", Some(Malformed)),
            ("https://item.taobao.com/item.htm?id=%2B1", Some(Malformed)),
            ("https://item.taobao.com/item.htm?id=1&id=2", Some(Malformed)),
            ("https://item.taobao.com/item.htm?id=12345678901234567890", Some(Malformed)),
            ("https://item.taobao.com/item.htm?id=18446744073709551616", Some(Malformed)),
            ("https://item.taobao.com/x/item.htm?id=1", Some(NotProduct)),
            ("https://shop1.taobao.com/?id=1", Some(NotProduct)),
            ("https://s.click.taobao.com/t?e=abc", Some(AffiliateLink)),
            ("https://s.click.taobao.com/abc", Some(ShortLink)),
            ("https://x.m.tb.cn/h.1", Some(ShortLink)),
            ("https://market.m.taobao.com/app/a#/detail/1?itemId=2", Some(NotProduct)),
            ("tbopen://m.taobao.com/x?h5Url=https%3A%2F%2Fevil.cn%2Fitem.htm%3Fid%3D1", Some(UntrustedHost)),
            ("tbopen://m.taobao.com/x?h5Url=tbopen%3A%2F%2Fm.taobao.com%2F%3Fh5Url%3D1", Some(Malformed)),
            ("tbopen://evil.cn/x?h5Url=https%3A%2F%2Fitem.taobao.com%2Fitem.htm%3Fid%3D1", Some(NotProduct)),
        ] {
            match want {
                None => {
                    let addr = Address::parse(url);
                    assert!(addr.is_ok_and(|a| classify_web(&a).is_none()), "{url}");
                }
                Some(kind) => assert_eq!(parse(url), Err(kind), "{url}"),
            }
        }
    }
}
