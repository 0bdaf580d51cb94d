//! User-agent classes: which product page form a shopper gets, and a coarse
//! label stored with each click.

/// Coarse user-agent class, stored with the click as its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaClass {
    /// An in-app browser of a social or messaging app (RED, WeChat, Weibo, Douyin, QQ, DingTalk, Alipay).
    App,
    /// A mobile web browser.
    Mobile,
    /// A desktop browser.
    Desktop,
    /// A crawler, link-preview fetcher, HTTP library, or an empty user agent.
    Bot,
}

impl UaClass {
    /// Stable wire name: `app`, `mobile`, `desktop`, `bot`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Mobile => "mobile",
            Self::Desktop => "desktop",
            Self::Bot => "bot",
        }
    }

    /// Whether the shopper should get the mobile product page.
    pub const fn is_mobile(self) -> bool {
        matches!(self, Self::App | Self::Mobile)
    }

    /// Classifies a `User-Agent` header value (`None` when absent).
    ///
    /// Bots are checked first (see [`bot_reason`]), so an in-app *preview fetcher* is a bot.
    pub fn classify(ua: Option<&str>) -> UaClass {
        Self::classify_with_reason(ua).0
    }

    /// Like [`UaClass::classify`], also returning the bot reason for [`UaClass::Bot`].
    ///
    /// Results for user agents of at most [`CACHED_UA_BYTES`] bytes are kept in a
    /// bounded cache ([`UA_CACHE_ENTRIES`] entries, quick_cache's S3-FIFO eviction):
    /// shoppers' user agents repeat (a handful of app and browser builds make most of
    /// the traffic), and classifying one costs about a microsecond (case folding, the
    /// named tables, the crawler regex) where a cache hit costs a hash. Longer or
    /// churning user agents are classified each time; the cache's memory stays below
    /// about `UA_CACHE_ENTRIES × CACHED_UA_BYTES`.
    pub fn classify_with_reason(ua: Option<&str>) -> (UaClass, Option<&'static str>) {
        let Some(key) = ua.filter(|u| u.len() <= CACHED_UA_BYTES) else {
            return Self::classify_uncached(ua);
        };
        let cache = ua_cache();
        if let Some(hit) = cache.get(key) {
            return hit;
        }
        let class = Self::classify_uncached(ua);
        cache.insert(key.into(), class);
        class
    }

    fn classify_uncached(ua: Option<&str>) -> (UaClass, Option<&'static str>) {
        if let Some(reason) = bot_reason(ua) {
            return (UaClass::Bot, Some(reason));
        }
        (Self::classify_human(ua), None)
    }

    fn classify_human(ua: Option<&str>) -> UaClass {
        let lower = ua.unwrap_or("").to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
        if has(APP_MARKERS) {
            return UaClass::App;
        }
        if has(&["mobile", "android", "iphone", "ipad", "ipod", "harmonyos", "openharmony"]) {
            return UaClass::Mobile;
        }
        UaClass::Desktop
    }
}

/// Why a user agent is a bot, or `None` for a person's browser.
///
/// Order: empty → `empty_ua`; a named link-preview fetcher or crawler (table
/// below) → its name; an HTTP library → `http_library`; any pattern of the
/// maintained crawler list of the `isbot` crate (patterns from the isbot
/// project, omrilotan/isbot) → `crawler`; no `Mozilla/` browser token at all →
/// `non_browser`.
pub fn bot_reason(ua: Option<&str>) -> Option<&'static str> {
    let Some(ua) = ua.map(str::trim).filter(|s| !s.is_empty()) else {
        return Some("empty_ua");
    };
    let lower = ua.to_ascii_lowercase();
    if let Some((_, name)) = NAMED_FETCHERS.iter().find(|(needle, _)| lower.contains(needle)) {
        return Some(name);
    }
    if HTTP_LIBRARIES.iter().any(|n| lower.contains(n)) {
        return Some("http_library");
    }
    if crawlers().is_bot(&lower) {
        return Some("crawler");
    }
    if !lower.contains("mozilla/") {
        return Some("non_browser");
    }
    None
}

/// Longest user agent whose class is cached, bytes.
pub const CACHED_UA_BYTES: usize = 512;
/// Entries of the user-agent class cache.
pub const UA_CACHE_ENTRIES: usize = 4096;

type UaCache = quick_cache::sync::Cache<Box<str>, (UaClass, Option<&'static str>)>;

fn ua_cache() -> &'static UaCache {
    static CACHE: std::sync::LazyLock<UaCache> = std::sync::LazyLock::new(|| UaCache::new(UA_CACHE_ENTRIES));
    &CACHE
}

fn crawlers() -> &'static isbot::Bots {
    static BOTS: std::sync::LazyLock<isbot::Bots> = std::sync::LazyLock::new(isbot::Bots::default);
    &BOTS
}

/// Substrings (lowercase) of in-app browsers' user agents.
const APP_MARKERS: &[&str] = &[
    "xhsdiscover",
    "xiaohongshu/",
    "micromessenger",
    "weibo",
    "aweme",
    "bytedancewebview",
    "qq/",
    "dingtalk",
    "alipayclient",
    "aliapp",
    "kuaishou",
];

/// Link-preview fetchers and crawlers named in reports: (lowercase substring, reason).
/// Checked before the generic list so the reason says who it was.
const NAMED_FETCHERS: &[(&str, &str)] = &[
    ("facebookexternalhit", "facebook_preview"),
    ("facebot", "facebook_preview"),
    // Telegram's fetcher says "TelegramBot (like TwitterBot)": name it first.
    ("telegrambot", "telegram_preview"),
    ("twitterbot", "x_twitter_preview"),
    ("slackbot", "slack_preview"),
    ("slack-imgproxy", "slack_preview"),
    ("whatsapp", "whatsapp_preview"),
    ("discordbot", "discord_preview"),
    ("linkedinbot", "linkedin_preview"),
    ("bytespider", "douyin_tiktok_crawler"),
    ("tiktokspider", "douyin_tiktok_crawler"),
    ("xiaohongshu-spider", "red_crawler"),
    ("xhsbot", "red_crawler"),
    ("weibo-spider", "weibo_crawler"),
    ("wechatbot", "wechat_preview"),
    ("mmwebid-preview", "wechat_preview"),
    ("googlebot", "googlebot"),
    ("bingbot", "bingbot"),
    ("baiduspider", "baiduspider"),
    ("sogou", "sogou_spider"),
    ("360spider", "360_spider"),
    ("yisouspider", "shenma_spider"),
    ("applebot", "applebot"),
];

/// HTTP client libraries and command-line tools (lowercase substrings).
const HTTP_LIBRARIES: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "reqwest",
    "httpie",
    "postmanruntime",
];

#[cfg(test)]
mod tests {
    use super::UaClass::{self, *};

    #[test]
    fn cached_class_is_the_computed_class() {
        let uas = [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 xiaohongshu/8.30",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
            "curl/8.5.0",
            "facebookexternalhit/1.1",
            "",
        ];
        for ua in uas {
            let computed = UaClass::classify_uncached(Some(ua));
            // First call fills the cache, the second is served from it.
            assert_eq!(UaClass::classify_with_reason(Some(ua)), computed, "{ua}");
            assert_eq!(UaClass::classify_with_reason(Some(ua)), computed, "{ua}");
        }
        let long = format!("Mozilla/5.0 (iPhone) Mobile {}", "x".repeat(super::CACHED_UA_BYTES));
        assert_eq!(UaClass::classify_with_reason(Some(&long)), (Mobile, None));
        assert!(super::ua_cache().get(long.as_str()).is_none(), "long user agents are not cached");
        assert_eq!(UaClass::classify_with_reason(None), (Bot, Some("empty_ua")));
    }

    #[test]
    fn classes() {
        let c = |s| UaClass::classify(Some(s));
        assert_eq!(UaClass::classify(None), Bot);
        assert_eq!(c(""), Bot);
        assert_eq!(c("curl/8.5.0"), Bot);
        assert_eq!(super::bot_reason(Some("curl/8.5.0")), Some("http_library"));
        assert_eq!(super::bot_reason(None), Some("empty_ua"));
        assert_eq!(super::bot_reason(Some("facebookexternalhit/1.1 Facebot Twitterbot/1.0")), Some("facebook_preview"));
        assert_eq!(
            super::bot_reason(Some("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)")),
            Some("douyin_tiktok_crawler")
        );
        assert_eq!(
            super::bot_reason(Some("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)")),
            Some("crawler")
        );
        assert_eq!(
            super::bot_reason(Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 MicroMessenger/8.0.47"
            )),
            None
        );
        assert_eq!(c("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"), Bot);
        assert_eq!(
            c(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47"
            ),
            App
        );
        assert_eq!(
            UaClass::classify(Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 XiaoHongShu/8.10.0"
            )),
            App
        );
        assert_eq!(
            c("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 discover/8.30 XHSDiscover"),
            App
        );
        assert_eq!(
            c("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"),
            Mobile
        );
        assert_eq!(
            c("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
            Desktop
        );
        assert!(App.is_mobile() && Mobile.is_mobile() && !Desktop.is_mobile() && !Bot.is_mobile());
    }
}
