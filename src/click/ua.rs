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
    /// Bot markers are checked first, so an in-app *preview fetcher* is a bot.
    pub fn classify(ua: Option<&str>) -> UaClass {
        let Some(ua) = ua.map(str::trim).filter(|s| !s.is_empty()) else {
            return UaClass::Bot;
        };
        let lower = ua.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
        if has(BOT_MARKERS) || !lower.contains("mozilla/") {
            return UaClass::Bot;
        }
        if has(APP_MARKERS) {
            return UaClass::App;
        }
        if has(&["mobile", "android", "iphone", "ipad", "ipod", "harmonyos", "openharmony"]) {
            return UaClass::Mobile;
        }
        UaClass::Desktop
    }
}

/// Substrings (lowercase) of in-app browsers' user agents.
const APP_MARKERS: &[&str] = &[
    "xhsdiscover",
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

/// Substrings (lowercase) of crawlers, preview fetchers and HTTP libraries.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "spider",
    "crawl",
    "preview",
    "facebookexternalhit",
    "slurp",
    "curl/",
    "wget/",
    "python-",
    "go-http",
    "okhttp",
    "java/",
    "headless",
    "whatsapp",
    "telegram",
    "slack",
    "embedly",
    "bingpreview",
];

#[cfg(test)]
mod tests {
    use super::UaClass::{self, *};

    #[test]
    fn classes() {
        let c = |s| UaClass::classify(Some(s));
        assert_eq!(UaClass::classify(None), Bot);
        assert_eq!(c(""), Bot);
        assert_eq!(c("curl/8.5.0"), Bot);
        assert_eq!(c("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"), Bot);
        assert_eq!(
            c(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47"
            ),
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
