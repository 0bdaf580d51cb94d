//! How an id sits inside a marketplace URL: in a query parameter (`item.htm?id=<id>`) or in
//! a path slot (`/<id>.html`, `/item/<id>.htm`, `/i<id>.htm`).
//!
//! Owns: the extraction helpers shared by the platform modules and the wording of their
//! "not a product page" and "bad id" errors. Never does I/O.

use super::address::Address;
use super::error::{InputError, quote};
use super::id::{looks_numeric, parse_numeric_id};

/// A path shape with one id slot: the path must be exactly `prefix` + id + `suffix`.
pub(super) type PathForm = (&'static str, &'static str);

/// Reads the item id from query parameter `key`. A missing parameter is `NotProduct` (a
/// product page always carries it); a present but invalid value is `Malformed`.
pub(super) fn id_from_query(addr: &Address, key: &str, family: &str) -> Result<u64, InputError> {
    match addr.param(key)? {
        None => Err(InputError::not_product(format!(
            "{} is a {family} page without an item '{key}' parameter: open the product and copy its URL",
            where_(addr)
        ))),
        Some(value) => parse_numeric_id(&value).ok_or_else(|| bad_id(key, &value)),
    }
}

/// Reads the item id from the first of `forms` that the path matches with a slot holding
/// only ASCII digits. `None` when no form matches; `Malformed` when the digits are not a
/// valid id (leading zero, too long).
pub(super) fn id_from_path(path: &str, forms: &[PathForm]) -> Option<Result<u64, InputError>> {
    forms.iter().find_map(|(prefix, suffix)| {
        let slot = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
        looks_numeric(slot).then(|| parse_numeric_id(slot).ok_or_else(|| bad_id("item id", slot)))
    })
}

/// The `skuId` query parameter when present, unambiguous and a valid id; otherwise `None`.
/// Lenient on purpose: a missing or odd SKU only means the product page opens without a
/// preselected SKU, which is never the wrong product.
pub(super) fn sku_from_query(addr: &Address) -> Option<u64> {
    addr.param("skuId").ok().flatten().and_then(|v| parse_numeric_id(&v))
}

/// `NotProduct` for a page of a known marketplace that is not a product page.
pub(super) fn not_product_page(addr: &Address, family: &str) -> InputError {
    InputError::not_product(format!(
        "{} is a {family} page but not a product page: open the product and copy its URL",
        where_(addr)
    ))
}

/// `Malformed` for an id value that is not 1–19 digits without a leading zero.
pub(super) fn bad_id(what: &str, value: &str) -> InputError {
    InputError::malformed(format!("{what} '{}' is not a valid id (1 to 19 digits, no leading zero)", quote(value)))
}

/// `host/path` of an address, shortened for messages.
pub(super) fn where_(addr: &Address) -> String {
    quote(&format!("{}{}", addr.host(), addr.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::InputErrorKind;

    const FORMS: [PathForm; 2] = [("/product/", ".html"), ("/", ".html")];

    #[test]
    fn path_forms() {
        let id = |p: &str| id_from_path(p, &FORMS).map(|r| r.map_err(|e| e.kind()));
        assert_eq!(id("/product/123.html"), Some(Ok(123)));
        assert_eq!(id("/123.html"), Some(Ok(123)));
        assert_eq!(id("/0123.html"), Some(Err(InputErrorKind::Malformed)));
        assert_eq!(id("/12345678901234567890.html"), Some(Err(InputErrorKind::Malformed)));
        assert_eq!(id("/a/123.html"), None);
        assert_eq!(id("/123.html/x"), None);
        assert_eq!(id("/.html"), None);
        assert_eq!(id("/１２３.html"), None);
        assert_eq!(id("/-1.html"), None);
    }
}
