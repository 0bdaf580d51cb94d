//! JD (京东): its trusted hosts, URL forms, short and affiliate links, and app links.
//!
//! Owns: turning a vetted [`Address`] on a JD host into a [`Product`]. On JD the item id IS
//! the SKU id, so [`Product::sku_id`] is always `None`. Never does I/O, never follows a short
//! link.
//!
//! Product URL forms accepted (exact hosts only):
//!
//! | host | form |
//! |---|---|
//! | `item.jd.com` | `/<id>.html`, `/product/<id>.html` |
//! | `item.m.jd.com` | `/product/<id>.html`, `/<id>.html`, `/ware/view.action?wareId=<id>` |
//! | `item.jd.hk`, `npcitem.jd.hk` | `/<id>.html` |
//! | `mitem.jd.hk` | `/product/<id>.html`, `/<id>.html` |
//! | `re.jd.com` | `/cps/item/<id>.html` (a `wareId` parameter, if any, must agree) |
//! | `openapp.jdmobile://item.jd.com/…` | as on `item.jd.com` |
//! | `openapp.jdmobile://virtual?params={…}` | `"des":"productDetail"` with `"skuId":"<id>"` |
//! | `linkst.m.jd.com/ul/ul.action?openapp.jdmobile://…` | the app link in the query |
//!
//! The `params` JSON of app links is read tolerantly: typographic quotes (`“ ” ＂`) count as
//! `"`, as JD's own share comments contain them. Only top-level members are read, so a
//! `skuId` nested in another object or string is never picked up.
//! `u.jd.com` and `3.cn` are short links; `union-click.jd.com` is an affiliate link. Any other
//! page under `jd.com` or `jd.hk` is not a product page.

use super::address::{Address, decode};
use super::error::{InputError, quote};
use super::forms::{PathForm, bad_id, id_from_path, id_from_query, not_product_page, where_};
use super::id::parse_numeric_id;
use super::{Platform, Product};

/// Domains of JD: a host equal to or under one of them is "known" (a wrong page there is
/// `NotProduct`, not `UntrustedHost`). Never used to accept an id.
const FAMILY: [&str; 3] = ["jd.com", "jd.hk", "3.cn"];

/// Words used in messages.
const FAMILY_NAME: &str = "JD";

/// The prefix of a JD app link, lowercase.
const APP_PREFIX: &str = "openapp.jdmobile://";

/// Path forms of the desktop and app item page.
const ITEM_PC: [PathForm; 2] = [("/product/", ".html"), ("/", ".html")];

/// Most nested objects/arrays skipped in app-link JSON before giving up.
const MAX_JSON_DEPTH: usize = 32;

/// Classifies an `http`/`https` address. `None` when the host is not a JD host at all.
pub(super) fn classify_web(addr: &Address) -> Option<Result<Product, InputError>> {
    let result = match addr.host() {
        "u.jd.com" | "3.cn" => Err(InputError::short_link(addr.host(), "product")),
        "union-click.jd.com" => Err(InputError::affiliate_link(addr.host())),
        "item.jd.com" | "mitem.jd.hk" => path_form(addr, &ITEM_PC),
        "item.jd.hk" | "npcitem.jd.hk" => path_form(addr, &[("/", ".html")]),
        "item.m.jd.com" if addr.path() == "/ware/view.action" => {
            id_from_query(addr, "wareId", FAMILY_NAME).map(product)
        }
        "item.m.jd.com" => path_form(addr, &ITEM_PC),
        "re.jd.com" => path_form(addr, &[("/cps/item/", ".html")]).and_then(|p| {
            // The CPS page repeats the id as wareId; a different one is ambiguous.
            match addr.param("wareId")? {
                Some(w) if parse_numeric_id(&w) != Some(p.item_id) => Err(InputError::malformed(format!(
                    "JD CPS link has path id {} but wareId '{}': paste the product page URL",
                    p.item_id,
                    quote(&w)
                ))),
                _ => Ok(p),
            }
        }),
        "linkst.m.jd.com" if addr.path() == "/ul/ul.action" => universal_link(addr),
        _ if addr.host_under(&FAMILY) => Err(not_product_page(addr, FAMILY_NAME)),
        _ => return None,
    };
    Some(result)
}

/// Classifies a JD app link (`openapp.jdmobile:`). App links never nest: the universal
/// link on `linkst.m.jd.com` is a web URL, and its inner app link is classified here.
pub(super) fn classify_app(addr: &Address) -> Result<Product, InputError> {
    match addr.host() {
        "item.jd.com" | "item.m.jd.com" => path_form(addr, &ITEM_PC),
        "virtual" => virtual_link(addr),
        _ => Err(app_not_product(&where_(addr))),
    }
}

fn product(item_id: u64) -> Product {
    Product { platform: Platform::Jd, item_id, sku_id: None }
}

fn app_not_product(target: &str) -> InputError {
    InputError::not_product(format!(
        "JD app link to {target} is not a product page: open it in the JD app and copy the product URL"
    ))
}

fn path_form(addr: &Address, forms: &[PathForm]) -> Result<Product, InputError> {
    match id_from_path(addr.path(), forms) {
        Some(r) => r.map(product),
        None => Err(not_product_page(addr, FAMILY_NAME)),
    }
}

/// `https://linkst.m.jd.com/ul/ul.action?openApp.jdMobile://…`: the whole query is an app link.
fn universal_link(addr: &Address) -> Result<Product, InputError> {
    let query = addr.query().unwrap_or("");
    let is_app_link = query.get(..APP_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(APP_PREFIX));
    if !is_app_link {
        return Err(not_product_page(addr, FAMILY_NAME));
    }
    let inner = Address::parse(query)?;
    match inner.host() {
        "item.jd.com" | "item.m.jd.com" | "virtual" => classify_app(&inner),
        _ => Err(app_not_product(&where_(&inner))),
    }
}

/// `openapp.jdmobile://virtual?params={…}`: a product only for `"des":"productDetail"`.
fn virtual_link(addr: &Address) -> Result<Product, InputError> {
    let query = addr.query().unwrap_or("");
    // The JSON may contain raw '&': take everything after `params=`, decode once, and let the
    // JSON reader stop at the object's closing brace.
    let raw = query.strip_prefix("params=").or_else(|| query.split_once("&params=").map(|(_, rest)| rest));
    let Some(raw) = raw else {
        return Err(app_not_product("a page without params"));
    };
    let json = decode(raw);
    let members = top_level_members(&json)
        .ok_or_else(|| InputError::malformed("JD app link params are not a readable JSON object"))?;
    let value = |key: &str| -> Result<Option<&str>, InputError> {
        let mut found: Option<&str> = None;
        for (k, v) in &members {
            if k == key {
                if found.is_some_and(|f| f != v) {
                    return Err(InputError::malformed(format!("JD app link has conflicting '{key}' values")));
                }
                found = Some(v);
            }
        }
        Ok(found)
    };
    let des = value("des")?;
    if des != Some("productDetail") {
        return Err(app_not_product(&format!("'{}'", quote(des.unwrap_or("(no des)")))));
    }
    match value("skuId")? {
        None => Err(app_not_product("a product detail without skuId")),
        Some(sku) => parse_numeric_id(sku).map(product).ok_or_else(|| bad_id("skuId", sku)),
    }
}

/// Reads the top-level string and number members of the JSON object at the start of `text`
/// (leading whitespace allowed, anything after the closing brace ignored). Nested objects,
/// arrays and literals are skipped. Typographic quotes count as `"`. `None` when the text is
/// not such an object.
fn top_level_members(text: &str) -> Option<Vec<(String, String)>> {
    let mut chars = text.chars().map(normalize_quote).peekable();
    let mut members = Vec::new();
    skip_ws(&mut chars);
    if chars.next()? != '{' {
        return None;
    }
    loop {
        skip_ws(&mut chars);
        match chars.next()? {
            '}' => return Some(members),
            '"' => {}
            _ => return None,
        }
        let key = read_string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next()? != ':' {
            return None;
        }
        skip_ws(&mut chars);
        match *chars.peek()? {
            '"' => {
                chars.next();
                members.push((key, read_string(&mut chars)?));
            }
            '{' | '[' => skip_nested(&mut chars)?,
            _ => {
                let mut scalar = String::new();
                while let Some(&c) = chars.peek() {
                    if matches!(c, ',' | '}') || c.is_whitespace() {
                        break;
                    }
                    scalar.push(c);
                    chars.next();
                }
                if scalar.is_empty() {
                    return None;
                }
                members.push((key, scalar));
            }
        }
        skip_ws(&mut chars);
        match chars.next()? {
            ',' => {}
            '}' => return Some(members),
            _ => return None,
        }
    }
}

fn normalize_quote(c: char) -> char {
    match c {
        '\u{201C}' | '\u{201D}' | '\u{FF02}' => '"',
        other => other,
    }
}

fn skip_ws(chars: &mut std::iter::Peekable<impl Iterator<Item = char>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// Reads a string body after its opening quote, through the closing quote.
fn read_string(chars: &mut impl Iterator<Item = char>) -> Option<String> {
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{C}'),
                'u' => {
                    let mut code = 0u32;
                    for _ in 0..4 {
                        code = code * 16 + chars.next()?.to_digit(16)?;
                    }
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                c @ ('"' | '\\' | '/') => out.push(c),
                _ => return None, // not a JSON escape: unreadable, never guessed around
            },
            c => out.push(c),
        }
    }
}

/// Skips one nested object or array (the next char is its opening bracket).
fn skip_nested(chars: &mut std::iter::Peekable<impl Iterator<Item = char>>) -> Option<()> {
    let mut depth = 0usize;
    loop {
        match chars.next()? {
            '{' | '[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return None;
                }
            }
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(());
                }
            }
            '"' => {
                read_string(chars)?;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::InputErrorKind::{self, *};

    fn parse(url: &str) -> Result<u64, InputErrorKind> {
        let addr = Address::parse(url).map_err(|e| e.kind())?;
        let r = if addr.scheme().is_web() {
            classify_web(&addr).unwrap_or(Err(InputError::malformed("untrusted")))
        } else {
            classify_app(&addr)
        };
        r.map(|p| p.item_id).map_err(|e| e.kind())
    }

    #[test]
    fn forms() {
        assert_eq!(parse("https://item.jd.com/1.html"), Ok(1));
        assert_eq!(parse("https://item.m.jd.com/ware/view.action?wareId=2"), Ok(2));
        assert_eq!(parse("https://re.jd.com/cps/item/3.html?wareId=3"), Ok(3));
        assert_eq!(parse("openapp.jdmobile://item.jd.com/4.html"), Ok(4));
        assert_eq!(parse(r#"openapp.jdmobile://virtual?params={"des":"productDetail","skuId":"5"}"#), Ok(5));
        assert_eq!(parse(r#"openapp.jdmobile://virtual?params={"des":"productDetail","skuId":6}&x=1"#), Ok(6));
        assert_eq!(parse("openapp.jdmobile://virtual?params={“des”:”productDetail”,”skuId”:”7“}"), Ok(7));
        assert_eq!(
            parse(
                "https://linkst.m.jd.com/ul/ul.action?openApp.jdMobile://virtual?params=%7B%22des%22%3A%22productDetail%22%2C%22skuId%22%3A%228%22%7D"
            ),
            Ok(8)
        );
    }

    #[test]
    fn hostile() {
        for (url, want) in [
            ("https://re.jd.com/cps/item/3.html?wareId=4", Malformed),
            ("https://item.jd.com/03.html", Malformed),
            ("https://item.jd.com/1.html/x", NotProduct),
            ("https://item.jd.com/abc.html", NotProduct),
            ("https://item.m.jd.com/ware/view.action?wareId=1&wareId=2", Malformed),
            ("https://coupon.m.jd.com/coupons/show.action?key=1", NotProduct),
            ("https://u.jd.com/abc", ShortLink),
            ("https://union-click.jd.com/jdc?d=abc", AffiliateLink),
            // skuId nested in another object or string is never read.
            (r#"openapp.jdmobile://virtual?params={"des":"productDetail","ext":{"skuId":"1"}}"#, NotProduct),
            (r#"openapp.jdmobile://virtual?params={"des":"productDetail","x":"\"skuId\":\"1\""}"#, NotProduct),
            (r#"openapp.jdmobile://virtual?params={"des":"getCoupon","skuId":"1"}"#, NotProduct),
            (r#"openapp.jdmobile://virtual?params={"des":"productDetail","skuId":"1","skuId":"2"}"#, Malformed),
            (r#"openapp.jdmobile://virtual?params={"des":"productDetail","skuId":"01"}"#, Malformed),
            ("openapp.jdmobile://virtual?params={{{{{{", Malformed),
            (r#"openapp.jdmobile://virtual?params={"des":"productDetail","skuId":"11\7"}"#, Malformed),
            ("openapp.jdmobile://virtual?params=", Malformed),
            ("openapp.jdmobile://virtual?x=1", NotProduct),
            ("openapp.jdmobile://evil.cn/1.html", NotProduct),
            ("https://linkst.m.jd.com/ul/ul.action?https://item.jd.com/1.html", NotProduct),
        ] {
            assert_eq!(parse(url), Err(want), "{url}");
        }
        let deep = format!(
            "openapp.jdmobile://virtual?params={{\"a\":{}1{},\"des\":\"productDetail\",\"skuId\":\"1\"}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&deep), Err(Malformed));
    }
}
