//! The realistic scenario: product URLs, notes and creators, minted links, the user-agent
//! mix and the per-click choices (which link, which user agent, GET or HEAD).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use http::{HeaderValue, Uri};
use rand::Rng;

use crate::control::Control;
use crate::histo::{Endpoint, ErrorKind, Recorder};
use crate::opts::UaMix;
use crate::zipf::Zipf;

/// The workspace's real product URLs, embedded so the binary works from any directory.
pub const DEFAULT_URLS_TSV: &str = include_str!("../../tests/data/real-links.tsv");

/// Coarse user-agent class, as the gateway classifies it (`app|mobile|desktop|bot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaClass {
    /// In-app browser (WeChat, RED).
    App,
    /// Mobile web.
    Mobile,
    /// Desktop web.
    Desktop,
    /// Crawler, preview fetcher, HTTP library, no user agent.
    Bot,
}

impl UaClass {
    /// Wire name, as the gateway stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            UaClass::App => "app",
            UaClass::Mobile => "mobile",
            UaClass::Desktop => "desktop",
            UaClass::Bot => "bot",
        }
    }
}

/// User agents sent, with the class the gateway gives them. An empty text means no
/// `User-Agent` header at all.
pub const USER_AGENTS: &[(&str, UaClass)] = &[
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
        UaClass::App,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; V2309A Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 MMWEBSDK/20231202 MicroMessenger/8.0.47.2560(0x28002F35) WeChat/arm64 Weixin NetType/5G Language/zh_CN ABI/arm64",
        UaClass::App,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 discover/8.31 (iPhone; iOS 17.4; Scale/3.00) Resolution/1179*2556 Version/8.31 Build/8310227 Device/(Apple Inc.;iPhone15,2) NetType/WiFi XHSDiscover",
        UaClass::App,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; 22081212C Build/TKQ1.220829.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/114.0.5735.196 Mobile Safari/537.36 discover/8.28.0 XhsDiscover",
        UaClass::App,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        UaClass::Mobile,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.105 Mobile Safari/537.36",
        UaClass::Mobile,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        UaClass::Desktop,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
        UaClass::Desktop,
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0", UaClass::Desktop),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", UaClass::Bot),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", UaClass::Bot),
    ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", UaClass::Bot),
    ("curl/8.5.0", UaClass::Bot),
    ("python-requests/2.31.0", UaClass::Bot),
    ("", UaClass::Bot),
];

/// A product URL the gateway can mint a link for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductUrl {
    /// The input as written in the file (URL, deep link or share text).
    pub input: String,
    /// `taobao`, `tmall` or `jd`.
    pub platform: String,
    /// The item id the gateway should find.
    pub item_id: String,
}

/// Reads the usable rows of a real-links TSV (columns input, platform, kind,
/// expected_item_id, note; header first): platform taobao/tmall/jd and an item id.
///
/// # Errors
/// No usable row.
pub fn parse_urls(tsv: &str) -> anyhow::Result<Vec<ProductUrl>> {
    let urls: Vec<ProductUrl> = tsv
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let input = cols.next()?.trim();
            let platform = cols.next()?.trim();
            let _kind = cols.next()?;
            let item = cols.next()?.trim();
            let usable = matches!(platform, "taobao" | "tmall" | "jd") && !item.is_empty() && !input.is_empty();
            usable.then(|| ProductUrl {
                input: input.to_owned(),
                platform: platform.to_owned(),
                item_id: item.to_owned(),
            })
        })
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no usable product URL (platform taobao/tmall/jd with an expected_item_id)");
    Ok(urls)
}

/// The product URLs of `--urls FILE`, or the embedded workspace file.
///
/// # Errors
/// The file cannot be read or has no usable row.
pub fn load_urls(path: Option<&Path>) -> anyhow::Result<Vec<ProductUrl>> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parse_urls(&text).with_context(|| format!("{}", p.display()))
        }
        None => parse_urls(DEFAULT_URLS_TSV),
    }
}

/// One minted tracked link.
#[derive(Debug, Clone)]
pub struct Link {
    /// Path and query of the link (`/j/…`), sent to the base URL whatever host the gateway minted it for.
    pub path: Uri,
    /// Index of its note in [`Plan::notes`].
    pub note: u32,
    /// `taobao`, `tmall` or `jd` as the gateway parsed it.
    pub platform: String,
    /// Item id as the gateway parsed it.
    pub item_id: String,
}

/// Everything the click connections share, built once before the load.
#[derive(Debug)]
pub struct Plan {
    /// Run id: notes and creators of this run carry it, so their stats start at zero.
    pub run_id: u32,
    /// Note ids (24 lowercase hex).
    pub notes: Vec<String>,
    /// Creator ids.
    pub creators: Vec<String>,
    /// The links, by popularity rank (0 = most clicked).
    pub links: Vec<Link>,
    /// Link popularity.
    pub zipf: Zipf,
    /// `Host` header value.
    pub host: HeaderValue,
    /// User agents: header value (`None` = no header) and class.
    pub uas: Vec<(Option<HeaderValue>, UaClass)>,
    /// Cumulative class weights in [`UaClass`] order app, mobile, desktop, bot.
    class_cdf: [f64; 4],
    /// Indexes into `uas` per class, same order.
    by_class: [Vec<usize>; 4],
    /// Share of requests sent as HEAD.
    pub head_share: f64,
    /// `X-Forwarded-For` values (client addresses); empty: no header.
    pub client_ips: Vec<HeaderValue>,
    /// Product URLs whose mint was refused (input, answer).
    pub refused: Vec<(String, String)>,
}

/// How a [`Plan`] chooses clicks.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Zipf exponent of link popularity.
    pub zipf_s: f64,
    /// `Host` header value.
    pub host: String,
    /// User-agent mix.
    pub mix: UaMix,
    /// Share of HEAD requests.
    pub head_share: f64,
    /// Distinct client addresses (0: no `X-Forwarded-For`).
    pub client_ips: u32,
}

/// Client address `i` (`i < 131072`) of the benchmarking range 198.18.0.0/15.
pub fn client_ip(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + (i & 0x1_ffff))
}

/// What one click request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickChoice {
    /// Index into [`Plan::links`].
    pub link: usize,
    /// Index into [`Plan::uas`].
    pub ua: usize,
    /// HEAD instead of GET.
    pub head: bool,
    /// Index into [`Plan::client_ips`], when there are any.
    pub ip: Option<usize>,
}

impl Plan {
    /// A plan over already-minted links (tests build plans without a gateway this way).
    ///
    /// # Errors
    /// No links, a bad Zipf exponent, UA mix or HEAD share, or a host that is not a header value.
    pub fn new(run_id: u32, minted: Minted, o: &PlanOptions) -> anyhow::Result<Plan> {
        let Minted { notes, creators, links, refused } = minted;
        anyhow::ensure!(!links.is_empty(), "no link could be minted");
        let zipf = Zipf::new(links.len(), o.zipf_s)?;
        let uas: Vec<(Option<HeaderValue>, UaClass)> = USER_AGENTS
            .iter()
            .map(|(t, c)| Ok((if t.is_empty() { None } else { Some(HeaderValue::from_str(t)?) }, *c)))
            .collect::<anyhow::Result<_>>()?;
        let classes = [UaClass::App, UaClass::Mobile, UaClass::Desktop, UaClass::Bot];
        let by_class = classes.map(|c| uas.iter().enumerate().filter(|(_, u)| u.1 == c).map(|(i, _)| i).collect());
        let mix = o.mix;
        let weights = [mix.app, mix.mobile, mix.desktop, mix.bot];
        let total: f64 = weights.iter().sum();
        anyhow::ensure!(total > 0.0, "the UA mix needs a positive weight");
        let mut acc = 0.0;
        let class_cdf = weights.map(|w| {
            acc += w / total;
            acc
        });
        anyhow::ensure!((0.0..=1.0).contains(&o.head_share), "--head-share must be within 0..1");
        let client_ips = (0..o.client_ips.min(1 << 17))
            .map(|i| HeaderValue::from_str(&client_ip(i).to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            run_id,
            notes,
            creators,
            links,
            zipf,
            host: HeaderValue::from_str(&o.host).context("host")?,
            uas,
            class_cdf,
            by_class,
            head_share: o.head_share,
            client_ips,
            refused,
        })
    }

    /// Draws click number `n`: a Zipf-popular link, a user agent from the mix, GET or HEAD,
    /// client address `n mod N` (so no address clicks again before all others have).
    pub fn choose<R: Rng + ?Sized>(&self, rng: &mut R, n: u64) -> ClickChoice {
        let link = self.zipf.sample(rng);
        let u: f64 = rng.random();
        let class = self.class_cdf.iter().position(|&c| u < c).unwrap_or(3);
        let pool =
            self.by_class.get(class).filter(|p| !p.is_empty()).or_else(|| self.by_class.iter().find(|p| !p.is_empty()));
        let ua = pool.map_or(0, |p| p[rng.random_range(0..p.len())]);
        let head = self.head_share > 0.0 && rng.random::<f64>() < self.head_share;
        let ips = self.client_ips.len() as u64;
        let ip = (ips > 0).then(|| usize::try_from(n % ips).unwrap_or(0));
        ClickChoice { link, ua, head, ip }
    }

    /// The class of user agent `ua`.
    pub fn ua_class(&self, ua: usize) -> UaClass {
        self.uas.get(ua).map_or(UaClass::Bot, |u| u.1)
    }
}

/// Note id `i` of run `run_id`: 24 lowercase hex.
pub fn note_id(run_id: u32, i: usize) -> String {
    format!("{run_id:08x}{i:016x}")
}

/// Creator id `i` of run `run_id`.
pub fn creator_id(run_id: u32, i: usize) -> String {
    format!("lt{run_id:08x}_c{i}")
}

/// What minting produced.
#[derive(Debug, Clone)]
pub struct Minted {
    /// Note ids.
    pub notes: Vec<String>,
    /// Creator ids.
    pub creators: Vec<String>,
    /// Links minted, in order.
    pub links: Vec<Link>,
    /// Product URLs refused (input, answer).
    pub refused: Vec<(String, String)>,
}

/// Mints `n_links` links over `n_notes` notes (note `k` belongs to creator `k % n_creators`)
/// and the product URLs (round robin), 16 at a time.
///
/// # Errors
/// A call without an answer, a 401/403, or an answer other than 201/400/422.
pub async fn mint_links(
    control: &Control,
    run_id: u32,
    urls: &[ProductUrl],
    (n_links, n_notes, n_creators): (usize, usize, usize),
    rec: &mut Recorder,
) -> anyhow::Result<Minted> {
    anyhow::ensure!(n_links > 0 && n_notes > 0 && n_creators > 0, "--links, --notes and --creators must be positive");
    anyhow::ensure!(!urls.is_empty(), "no product URL");
    let notes: Vec<String> = (0..n_notes).map(|i| note_id(run_id, i)).collect();
    let creators: Vec<String> = (0..n_creators).map(|i| creator_id(run_id, i)).collect();
    let notes = Arc::new(notes);
    let creators = Arc::new(creators);
    let mut set = tokio::task::JoinSet::new();
    let mut results: Vec<Option<Link>> = vec![None; n_links];
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut next = 0usize;
    loop {
        while set.len() < 16 && next < n_links {
            let i = next;
            next += 1;
            let note = i % n_notes;
            let url = urls[i % urls.len()].input.clone();
            let body = serde_json::json!({
                "note_id": notes[note],
                "creator_id": creators[note % n_creators],
                "url": url,
            });
            let control = control.clone();
            set.spawn(async move {
                let started = std::time::Instant::now();
                let res = control.post_json("/v1/links", &body.to_string()).await;
                (i, note, url, started.elapsed(), res)
            });
        }
        let Some(joined) = set.join_next().await else { break };
        let (i, note, url, latency, res) = joined.context("mint task")?;
        let (status, body) = match res {
            Ok(r) => r,
            Err(e) => {
                rec.error(Endpoint::Mint, e.kind);
                if e.unreachable() {
                    anyhow::bail!("cannot mint links: {}", e.message);
                }
                anyhow::bail!("minting a link for {url:?}: {}", e.message);
            }
        };
        rec.answer(Endpoint::Mint, status, latency);
        match status {
            201 => {
                let v: serde_json::Value = serde_json::from_slice(&body).context("mint answer")?;
                let link = v["link"].as_str().context("mint answer without link")?;
                let full: Uri = link.parse().with_context(|| format!("minted link {link:?}"))?;
                let path: Uri = full.path_and_query().map_or("/", |p| p.as_str()).parse()?;
                results[i] = Some(Link {
                    path,
                    note: u32::try_from(note)?,
                    platform: v["platform"].as_str().unwrap_or_default().to_owned(),
                    item_id: v["item_id"].as_str().unwrap_or_default().to_owned(),
                });
            }
            400 | 422 => {
                rec.error(Endpoint::Mint, ErrorKind::Status);
                refused.push((url, String::from_utf8_lossy(&body).into_owned()));
            }
            401 | 403 => anyhow::bail!("minting refused ({status}): check --admin-token"),
            _ => anyhow::bail!("minting {url:?}: unexpected {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    let links: Vec<Link> = results.into_iter().flatten().collect();
    let notes = Arc::try_unwrap(notes).unwrap_or_else(|a| (*a).clone());
    let creators = Arc::try_unwrap(creators).unwrap_or_else(|a| (*a).clone());
    Ok(Minted { notes, creators, links, refused })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn embedded_urls_parse() {
        let urls = parse_urls(DEFAULT_URLS_TSV).unwrap();
        assert!(urls.len() >= 20, "{}", urls.len());
        assert!(urls.iter().all(|u| !u.item_id.is_empty()));
        for p in ["taobao", "tmall", "jd"] {
            assert!(urls.iter().any(|u| u.platform == p), "{p}");
        }
        assert!(parse_urls("input\tplatform\tkind\texpected_item_id\tnote\nx\tjd\tk\t\tn\n").is_err());
    }

    #[test]
    fn ids_have_the_gateway_shapes() {
        let n = note_id(0xdead_beef, 42);
        assert_eq!(n.len(), 24);
        assert!(n.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(creator_id(1, 3), "lt00000001_c3");
    }

    #[test]
    fn choices_follow_the_mix() {
        let link = Link { path: "/j/x".parse().unwrap(), note: 0, platform: "jd".into(), item_id: "1".into() };
        let minted = Minted {
            notes: vec![note_id(1, 0)],
            creators: vec![creator_id(1, 0)],
            links: vec![link; 10],
            refused: vec![],
        };
        let o = PlanOptions {
            zipf_s: 1.0,
            host: "h:1".into(),
            mix: UaMix::parse("app=1,bot=1").unwrap(),
            head_share: 0.25,
            client_ips: 1000,
        };
        let plan = Plan::new(1, minted, &o).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 40_000;
        let picks: Vec<ClickChoice> = (0..n).map(|i| plan.choose(&mut rng, i as u64)).collect();
        assert_eq!(picks[1001].ip, Some(1));
        assert_eq!(plan.client_ips[1], "198.18.0.1");
        assert_eq!(client_ip(131_071).to_string(), "198.19.255.255");
        let bots = picks.iter().filter(|c| plan.ua_class(c.ua) == UaClass::Bot).count();
        let apps = picks.iter().filter(|c| plan.ua_class(c.ua) == UaClass::App).count();
        let heads = picks.iter().filter(|c| c.head).count();
        assert_eq!(bots + apps, n);
        assert!((bots as f64 / n as f64 - 0.5).abs() < 0.02, "{bots}");
        assert!((heads as f64 / n as f64 - 0.25).abs() < 0.02, "{heads}");
        assert!(picks.iter().all(|c| c.link < 10));
    }
}
