//! Every row of `tests/data/real-links.tsv` (real-world product/note links and share texts)
//! through `parse_product` / `parse_note`, with the exact expected outcome per row.
//!
//! Rows with an expected id must parse to that platform, id (and SKU where the URL has one).
//! Every other row must fail with one exact [`InputErrorKind`]: from the TSV `kind` column
//! where it is unambiguous (`KIND_MAP`), else from the per-row decision table `DECISIONS`.
//! A row that neither covers fails the test, and so does a decision that matches no row or
//! more than one.

use std::collections::BTreeMap;

use linkloop::note::parse_note;
use linkloop::platform::{InputErrorKind, Platform, Product, parse_product, product_page};

const TSV: &str = include_str!("../data/real-links.tsv");

/// TSV kinds whose rows (without an expected id) all fail the same way.
const KIND_MAP: [(&str, InputErrorKind); 8] = [
    ("short_link", InputErrorKind::ShortLink),
    ("affiliate_click", InputErrorKind::AffiliateLink),
    ("ad_click", InputErrorKind::AffiliateLink),
    ("taokouling", InputErrorKind::ShareToken),
    ("jd_command", InputErrorKind::ShareToken),
    ("doc_page", InputErrorKind::NotProduct),
    ("topic_page", InputErrorKind::NotProduct),
    ("user_profile", InputErrorKind::NotProduct),
];

/// Per-row decisions for ambiguous kinds (`share_text`, `coupon`, `reject`, `app_deeplink`
/// and `app_universal_link` without an id), keyed by a prefix unique to one row.
const DECISIONS: [(&str, InputErrorKind); 35] = {
    use InputErrorKind::*;
    [
        // --- coupon: an affiliate coupon landing vs a JD coupon page.
        ("https://uland.taobao.com/coupon/edetail?", AffiliateLink),
        ("https://coupon.m.jd.com/coupons/show.action?", NotProduct),
        // --- app links without a product.
        ("openapp.jdmobile://virtual?params={\"category\":\"jump\",\"des\":\"couponCenter\"}", NotProduct),
        ("https://linkst.m.jd.com/ul/ul.action?openApp.jdMobile://virtual?params=%7B%22SE%22", NotProduct),
        // --- reject rows: foreign scheme; user info, ports, bad ids and dot segments are
        // Malformed; a look-alike host is UntrustedHost.
        ("file:///etc/passwd", UnsupportedScheme),
        ("https://user@xiaohongshu.com/explore/abc", Malformed),
        ("https://www.xiaohongshu.com/discovery/item/not-a-note-id", Malformed),
        ("https://www.xiaohongshu.com:444/discovery/item/", Malformed),
        ("https://xhslink.com/o/../../localhost", Malformed),
        ("https://xiaohongshu.com.evil.test/", UntrustedHost),
        ("https://xiaohongshu.com:444/explore/abc", Malformed),
        // --- JD share text: the link decides.
        ("[p2p]: https://union-click.jd.com/jdc?d=oGNekr", AffiliateLink),
        ("https://u.jd.com/lOItP06[CQ:image,", ShortLink),
        ("【京东】https://3.cn/2odH-z1a「", ShortLink),
        ("🎁七夕好礼【照片定制充电宝】", AffiliateLink),
        // --- Taobao share text: a short link wins over a token; a token alone, or next to
        // an untrusted look-alike short link (v.wzd0.com), is ShareToken.
        ("16:06【淘宝】https://m.tb.cn/h.58QQm4s", ShortLink),
        ("【2018夏季新款女装薄款白色打底内衣", ShortLink),
        ("【冬季外套女2018新款韩版流行毛呢大衣", ShortLink),
        ("【堆堆领秋衣大码女装韩版修身打底衫", ShortLink),
        ("【最高888元，每天三次抢红I包机会", ShareToken),
        ("【杭州真丝上衣女2018新款短袖t恤", ShareToken),
        ("【森马风衣男士简约风景印花休闲中长款外套学生韩版潮】http://v.wzd0.com/", ShareToken),
        ("【法国菜特价3】http://m.tb.cn/h.3cCldb1", ShortLink),
        ("【淘宝】https://m.tb.cn/h.5j1hJot?tk=", ShortLink),
        ("【淘宝】https://m.tb.cn/h.chX19 ", ShortLink),
        ("【淘宝】https://m.tb.cn/h.example「商品」", ShortLink),
        ("【淘宝】https://m.tb.cn/h.g4BvEJQmeIumIYR?", ShortLink),
        ("【淘宝】https://m.tb.cn/h.gYyodz7Zwqwt9FF?", ShortLink),
        ("【轻薄羽绒服女短款立领连帽时尚韩版修身", ShortLink),
        ("复制框内整段文字，打开「手淘」", ShareToken),
        // --- RED share text with only an xhslink.com short link.
        ("13 我是XX发布了一篇小红书笔记", ShortLink),
        ("40 小黑发布了一篇小红书笔记", ShortLink),
        ("59 小熊熊.发布了一篇小红书笔记", ShortLink),
        ("79 小狗发布了一篇小红书笔记", ShortLink),
        ("【东京3日游｜懒人版攻略", ShortLink),
    ]
};

/// SKUs the rows' URLs carry (item id → skuId). Every other product row must have none.
const SKUS: [(u64, u64); 6] = [
    (878_010_637_397, 5_915_703_371_831),
    (916_832_099_884, 5_785_220_608_417),
    (923_265_595_732, 5_801_742_476_727),
    (41_254_478_179, 3_214_771_215_838),
    (43_724_784_272, 4_611_686_062_152_172_176),
    (16_184_646_887, 3_960_031_335_855),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Product(Product),
    Note(String),
    Error(InputErrorKind),
}

struct Row<'a> {
    line: usize,
    input: &'a str,
    platform: &'a str,
    kind: &'a str,
    id: &'a str,
}

fn rows() -> Vec<Row<'static>> {
    let mut out = Vec::new();
    for (i, line) in TSV.lines().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "line {}: expected 5 columns: {line:?}", i + 1);
        let field = |n: usize| cols.get(n).copied().unwrap_or_default();
        out.push(Row { line: i + 1, input: field(0), platform: field(1), kind: field(2), id: field(3) });
    }
    out
}

fn is_note_row(row: &Row<'_>) -> bool {
    row.platform == "xiaohongshu"
}

fn actual(row: &Row<'_>) -> Outcome {
    if is_note_row(row) {
        match parse_note(row.input) {
            Ok(id) => Outcome::Note(id.as_str().to_owned()),
            Err(e) => Outcome::Error(e.kind()),
        }
    } else {
        match parse_product(row.input) {
            Ok(p) => Outcome::Product(p),
            Err(e) => Outcome::Error(e.kind()),
        }
    }
}

/// The expected outcome, or an explanation of why the row is not covered.
fn expected(row: &Row<'_>, decisions_used: &mut BTreeMap<&str, usize>) -> Result<Outcome, String> {
    if !row.id.is_empty() {
        if is_note_row(row) {
            return Ok(Outcome::Note(row.id.to_owned()));
        }
        let platform =
            Platform::from_name(row.platform).ok_or_else(|| format!("unknown platform {:?}", row.platform))?;
        let item_id: u64 = row.id.parse().map_err(|e| format!("bad expected id {:?}: {e}", row.id))?;
        let sku_id = SKUS.iter().find(|(i, _)| *i == item_id).map(|(_, s)| *s);
        return Ok(Outcome::Product(Product { platform, item_id, sku_id }));
    }
    let decided: Vec<_> = DECISIONS.iter().filter(|(prefix, _)| row.input.starts_with(prefix)).collect();
    match decided.as_slice() {
        [(prefix, kind)] => {
            *decisions_used.entry(prefix).or_default() += 1;
            return Ok(Outcome::Error(*kind));
        }
        [] => {}
        many => return Err(format!("{} decisions match this row", many.len())),
    }
    KIND_MAP
        .iter()
        .find(|(k, _)| *k == row.kind)
        .map(|(_, kind)| Outcome::Error(*kind))
        .ok_or_else(|| format!("unhandled row: kind {:?} has no decision", row.kind))
}

#[test]
fn every_real_link_row_parses_as_decided() {
    let rows = rows();
    let mut decisions_used = BTreeMap::new();
    let mut failures = Vec::new();
    let mut by_kind: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for row in &rows {
        let got = actual(row);
        let label = match &got {
            Outcome::Product(p) => format!("ok:{}", p.platform),
            Outcome::Note(_) => "ok:note".to_owned(),
            Outcome::Error(k) => k.as_str().to_owned(),
        };
        *by_kind.entry((row.kind, label)).or_default() += 1;
        match expected(row, &mut decisions_used) {
            Ok(want) if want == got => {}
            Ok(want) => {
                failures.push(format!("line {}: {:?}\n    want {want:?}\n    got  {got:?}", row.line, row.input))
            }
            Err(why) => failures.push(format!("line {}: {:?}: {why}", row.line, row.input)),
        }
    }
    for (prefix, _) in DECISIONS {
        match decisions_used.get(prefix) {
            Some(1) => {}
            n => failures
                .push(format!("decision {prefix:?} matched {} rows, expected exactly 1", n.copied().unwrap_or(0))),
        }
    }

    let passed = rows.len() - failures.iter().filter(|f| f.starts_with("line")).count();
    println!("real-links.tsv outcomes (tsv kind -> result: rows):");
    for ((kind, label), n) in &by_kind {
        println!("  {kind:<20} -> {label:<20} {n}");
    }
    println!("real-links.tsv: {} rows, {passed} passed, {} failed", rows.len(), rows.len() - passed);
    assert!(rows.len() >= 150, "the TSV shrank to {} rows", rows.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Errors carry a non-empty message, and a product always maps to a canonical page on the
/// platform's own host.
#[test]
fn real_link_errors_have_messages_and_products_have_pages() {
    for row in rows() {
        if is_note_row(&row) {
            if let Err(e) = parse_note(row.input) {
                assert!(!e.to_string().is_empty(), "{}", row.input);
            }
            continue;
        }
        match parse_product(row.input) {
            Ok(p) => {
                for mobile in [false, true] {
                    let page = product_page(p.platform, p.item_id, p.sku_id, mobile);
                    let host_ok = match p.platform {
                        Platform::Taobao => page.contains(".taobao.com/"),
                        Platform::Tmall => page.contains(".tmall.com/"),
                        Platform::Jd => page.contains(".jd.com/"),
                    };
                    assert!(page.starts_with("https://") && host_ok, "{page}");
                    assert!(page.contains(&p.item_id.to_string()), "{page}");
                }
            }
            Err(e) => {
                assert_eq!(e.to_string(), e.message());
                assert!(e.message().len() > 10, "{}: {:?}", row.input, e.message());
            }
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the mutation test needs no extra crate and is
/// reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Characters that matter to the parsers: delimiters, wrappers, look-alikes.
const PALETTE: [&str; 32] = [
    "/", "?", "#", "&", "=", "%", "%2", "%2e", ".", "..", "@", ":", "\\", " ", "\n", "{", "}", "\"", "“", "￥", "【",
    "」", "，", "😆", "0", "9", "xn--", "://", "https://", "id=", "ı", "\u{0}",
];

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                let len = rng.below(8) + 1;
                let end = (at + len).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            1 => {
                let piece = PALETTE.get(rng.below(PALETTE.len())).copied().unwrap_or("");
                let at = at.min(chars.len());
                for (k, c) in piece.chars().enumerate() {
                    chars.insert(at + k, c);
                }
            }
            2 => {
                let at = at.min(chars.len());
                chars.truncate(at);
            }
            3 => {
                if let Some(c) = chars.get_mut(at) {
                    *c = c.to_ascii_uppercase();
                }
            }
            _ => {
                let piece: String = chars.iter().skip(at).take(16).collect();
                let at = at.min(chars.len());
                for (k, c) in piece.chars().enumerate() {
                    chars.insert(at + k, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Property: random mutations of every row never panic, and whatever parses still yields a
/// well-formed id.
#[test]
fn mutated_rows_never_panic() {
    let rows = rows();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut parsed = 0usize;
    let mut total = 0usize;
    for _ in 0..40 {
        for row in &rows {
            let input = mutate(&mut rng, row.input);
            total += 1;
            if let Ok(p) = parse_product(&input) {
                parsed += 1;
                assert!(p.item_id > 0 && p.item_id.to_string().len() <= 19, "{input:?}");
                assert!(p.platform != Platform::Jd || p.sku_id.is_none(), "{input:?}");
            }
            if let Ok(n) = parse_note(&input) {
                let id = n.as_str();
                assert!(
                    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{input:?} -> {id:?}"
                );
            }
        }
    }
    println!("mutated rows: {total} inputs, {parsed} still parsed as products");
}
