//! Command-line options ([`Opts`]) and their small parsers (durations, the UA mix).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// `linkloop-loadtest [OPTIONS] <BASE_URL>`: drive a linkloop gateway (or any URL with
/// `--target-kind plain`) and verify afterwards that every click and conversion was
/// recorded exactly once.
#[derive(Debug, Clone, Parser)]
#[command(name = "linkloop-loadtest", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Opts {
    /// Gateway base URL (`http://host:port`); with `--target-kind plain`, the URL to GET.
    #[arg(value_parser = parse_base_url)]
    pub base_url: String,

    /// Connections for the click traffic (each: one HTTP/1.1 keep-alive connection, one request at a time;
    /// 1 to 4096, each holding ≈ 0.75 MB of latency histograms).
    #[arg(short = 'c', long, default_value_t = 64, value_parser = parse_connections)]
    pub connections: usize,

    /// Open loop: click requests per second (0.001 to 10^9) on a fixed schedule, each released at its
    /// planned time by a `timerfd` pacer (a few at a time, at most 100 µs early; not in millisecond bursts); latency is
    /// measured from each request's planned send time (no coordinated omission). Without it: closed
    /// loop, as fast as the connections go. Either way the connections are opened before the clock starts.
    #[arg(short = 'R', long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// How long to send click traffic (e.g. `10s`, `500ms`, `2m`). With `--requests`, whichever ends first.
    #[arg(short = 'd', long, value_parser = parse_positive_duration, default_value = "10s")]
    pub duration: Duration,

    /// Stop after this many click requests (GET + HEAD), at least 1.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// HTTP client of the click connections: `raw` (a minimal HTTP/1.1 client, no allocation
    /// per request) or `hyper` (hyper 1's connection API; nearly twice the CPU per request).
    #[arg(long, value_enum, default_value_t = crate::clicks::ClientKind::Raw)]
    pub client: crate::clicks::ClientKind,

    /// Per-request time limit; a request past it counts as a `timeout` error. Also bounds the end
    /// of the run: requests in flight at the end of `--duration` get this long, and conversion
    /// callbacks are given up once the gateway has refused every connection for this long.
    #[arg(long, value_parser = parse_positive_duration, default_value = "5s")]
    pub timeout: Duration,

    /// What the target is: `linkloop` (mint links, realistic traffic, verification) or `plain`
    /// (GET the one URL with `--user-agent`; no minting, no conversions, no verification).
    #[arg(long, value_enum, default_value_t = TargetKind::Linkloop)]
    pub target_kind: TargetKind,

    /// `User-Agent` of `--target-kind plain` requests (the gateway counts only browser-like agents as clicks).
    #[arg(long, default_value = "linkloop-loadtest")]
    pub user_agent: String,

    /// Admin bearer token of the gateway (minting links, stats API).
    #[arg(long, env = "LINKLOOP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Product URLs: a TSV with columns input, platform, kind, expected_item_id, note; rows with
    /// platform taobao/tmall/jd and an expected_item_id are used. Default: the workspace's
    /// `tests/data/real-links.tsv`.
    #[arg(long)]
    pub urls: Option<PathBuf>,

    /// Tracked links to mint (spread over the notes and the product URLs).
    #[arg(long, default_value_t = 200)]
    pub links: usize,

    /// Distinct notes (fresh random ids per run, so stats start from zero).
    #[arg(long, default_value_t = 50)]
    pub notes: usize,

    /// Distinct creators (each note belongs to one creator).
    #[arg(long, default_value_t = 10)]
    pub creators: usize,

    /// Zipf exponent of link popularity (link of rank k is clicked ∝ 1/k^s; 0 = uniform).
    #[arg(long, default_value_t = 1.1)]
    pub zipf_s: f64,

    /// User-agent mix, relative weights of `app` (WeChat / RED in-app browsers), `mobile`, `desktop`, `bot`.
    #[arg(long, value_parser = UaMix::parse, default_value = "app=50,mobile=25,desktop=15,bot=10")]
    pub ua_mix: UaMix,

    /// Share of click requests sent as `HEAD` (never a click: the gateway records it as non-billable).
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub head_share: f64,

    /// Whether the gateway counts bot clicks as clicks; sets the expected click counts. Since
    /// the abuse-control change the gateway records bots (and HEADs) as non-billable: `false`.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub bots_counted: bool,

    /// Distinct client addresses sent in `X-Forwarded-For`: click `n` comes from address
    /// `n mod N` of 198.18.0.0/15 (the benchmarking range, at most 131072), so per-client
    /// limits and unique visitors see many shoppers; 0 sends no header. The gateway believes
    /// the header only from a trusted proxy: list the tester's address in its `trusted_proxies`.
    #[arg(long, default_value_t = 131_072, value_parser = clap::value_parser!(u32).range(0..=131_072))]
    pub client_ips: u32,

    /// Share of counted `GET` clicks (non-bot) followed by a signed `paid` conversion.
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub conversion_share: f64,

    /// Longest random delay (uniform from 0) between a click and its conversion, and between a
    /// conversion and its duplicate delivery or refund.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub conversion_delay: Duration,

    /// Share of accepted conversions delivered a second time (must answer `200` duplicate).
    #[arg(long, default_value_t = 0.2, value_parser = parse_share)]
    pub duplicate_share: f64,

    /// Share of accepted conversions later refunded (a random part or all of the amount).
    #[arg(long, default_value_t = 0.2, value_parser = parse_share)]
    pub refund_share: f64,

    /// Merchant id for conversion callbacks (`Linkloop-Merchant`); must be allowed on taobao, tmall and jd.
    /// Without it (or without a secret) no conversions are sent.
    #[arg(long)]
    pub merchant: Option<String>,

    /// The merchant's signing secret.
    #[arg(long, env = "LINKLOOP_MERCHANT_SECRET", hide_env_values = true)]
    pub merchant_secret: Option<String>,

    /// Key id of the merchant secret.
    #[arg(long, default_value_t = 1)]
    pub kid: u8,

    /// Conversion callbacks in flight at once.
    #[arg(long, default_value_t = 16)]
    pub conversion_concurrency: usize,

    /// Skip the verification phase.
    #[arg(long)]
    pub no_verify: bool,

    /// Longest wait for the gateway's asynchronous counters to match.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub verify_timeout: Duration,

    /// Redis of the gateway: also check, token by token, that every counted click is in the stream
    /// `ll:clicks` exactly once, that no HEAD or uncounted bot is, and that those are in
    /// `ll:nonbillable` once. `redis://host:port` or `unix:///absolute/path/redis.sock` (the
    /// gateway's supervised Redis: `{data_dir}/redis/redis.sock`, the data dir made absolute).
    #[arg(long, value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Progress output: `auto` (a bar on a terminal, plain lines otherwise), `bar`, `lines`, `off`.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// Runtime worker threads (default: the CPUs this process may use; 1 = a single-threaded runtime).
    /// Used by the binary only.
    #[arg(long)]
    pub threads: Option<usize>,

    /// Random seed (default: from the clock). The same seed gives the same choices, not the same timing.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Opts {
    /// Options as the command line `linkloop-loadtest ARGS… BASE_URL` would give them.
    ///
    /// # Errors
    /// Clap's error for an unknown or malformed option.
    pub fn from_args<I, T>(args: I) -> Result<Opts, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let all =
            std::iter::once(std::ffi::OsString::from("linkloop-loadtest")).chain(args.into_iter().map(Into::into));
        Opts::try_parse_from(all)
    }
}

const AFTER_HELP: &str = "\
The run always ends by itself, about on time: no click request starts after --duration (or
--requests), in either loop, and requests in flight then get --timeout. Open loop: requests
planned but not sent by then (the target or the tester could not keep up) are counted as not
sent, with a warning. Queued conversion callbacks get at most 3 x --conversion-delay + 5 x
--timeout + 5 s more, and are dropped at once when the gateway has refused every connection
for --timeout. Once the load ran its measurements are printed (and --json written) even when
the verification cannot be done.

Exit status: 0 passed; 1 the verification found a difference; 2 an error, e.g. the gateway
(or plain target) unreachable: before the load; during it, when not a single request was
answered, or, open loop, when it stopped answering mid-run (the rate not reached and at least
-c connection attempts refused); or after it, with the verification not possible, or every
conversion callback refused for its merchant or signature; 3 open loop: the requested rate was
not reached (more than 1% of the planned requests not sent) though the target kept answering;
64 a usage error (an unknown option, a bad value: -R outside 0.001 to 1e9, -c outside 1 to
4096, -d, --timeout or -n of zero, a duration over 365 days, a share outside 0 to 1, a
BASE_URL that is not http://, a relative unix:// socket path); 130 quit by a second Ctrl-C
(the first ends the load, and the run then finishes: requests in flight, queued conversions,
the verification). Answers of any status (a 404 too) count as answered.";

/// What `BASE_URL` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// A linkloop gateway: mint, click, convert, verify.
    Linkloop,
    /// Any HTTP/1.1 URL: GET it, count statuses, measure. For comparing with `wrk`.
    Plain,
}

/// How progress is shown while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// A one-line bar redrawn with `\r`.
    Bar,
    /// One plain line per second.
    Lines,
    /// Nothing.
    Off,
}

/// Relative weights of the user-agent classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UaMix {
    /// In-app browsers (WeChat, RED).
    pub app: f64,
    /// Mobile web browsers.
    pub mobile: f64,
    /// Desktop browsers.
    pub desktop: f64,
    /// Crawlers, preview fetchers, HTTP libraries.
    pub bot: f64,
}

impl UaMix {
    /// Parses `app=50,mobile=25,desktop=15,bot=10` (any subset; missing classes weigh 0).
    ///
    /// # Errors
    /// A message naming the bad part.
    pub fn parse(text: &str) -> Result<UaMix, String> {
        let mut mix = UaMix { app: 0.0, mobile: 0.0, desktop: 0.0, bot: 0.0 };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected class=weight"))?;
            let w: f64 = v.trim().parse().map_err(|_| format!("{part:?}: weight is not a number"))?;
            if !w.is_finite() || w < 0.0 {
                return Err(format!("{part:?}: weight must be >= 0"));
            }
            match k.trim() {
                "app" => mix.app = w,
                "mobile" => mix.mobile = w,
                "desktop" => mix.desktop = w,
                "bot" => mix.bot = w,
                other => return Err(format!("{other:?}: classes are app, mobile, desktop, bot")),
            }
        }
        if mix.app + mix.mobile + mix.desktop + mix.bot <= 0.0 {
            return Err("at least one weight must be positive".into());
        }
        Ok(mix)
    }
}

/// Longest duration any option takes (`--duration`, `--timeout`, …): 365 days. Beyond it an
/// instant plus the duration could overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// `-R`: requests per second, from [`crate::schedule::MIN_RATE`] to [`crate::schedule::MAX_RATE`].
///
/// # Errors
/// Not a number, or outside that range (a usage error, before any request is sent).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    use crate::schedule::{MAX_RATE, MIN_RATE};
    let r: f64 = text.trim().parse().map_err(|_| format!("{text:?}: expected requests per second, e.g. 5000"))?;
    if r.is_finite() && (MIN_RATE..=MAX_RATE).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{text:?}: must be from {MIN_RATE} to {MAX_RATE:e} requests/s"))
    }
}

/// Most connections `-c` takes. Each connection holds its own HDR latency histograms
/// (≈ 0.75 MB: 1,000 connections measured at 763 MB resident), so 4,096 is ≈ 3 GB; far more
/// would run the machine out of memory before the first request.
pub const MAX_CONNECTIONS: usize = 4096;

/// `-c`: 1 to [`MAX_CONNECTIONS`].
///
/// # Errors
/// Not a whole number, or outside that range.
pub fn parse_connections(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
        Ok(n) if n > MAX_CONNECTIONS => {
            Err(format!("{text:?}: at most {MAX_CONNECTIONS} connections (each holds ≈ 0.75 MB of latency histograms)"))
        }
        _ => Err(format!("{text:?}: expected a number of connections, at least 1")),
    }
}

/// `BASE_URL`: an `http://` URL with a host (the tester speaks plain HTTP/1.1).
///
/// # Errors
/// Not a URL, another scheme, or no host.
pub fn parse_base_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("{text:?}: not a URL ({e}); e.g. http://127.0.0.1:8080"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{text:?}: must be an http:// URL, e.g. http://127.0.0.1:8080"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?}: no host"));
    }
    Ok(text.to_owned())
}

/// `--redis-url`: a URL redis-rs opens (`redis://`, `rediss://`, `unix://`); a `unix://` path
/// must be absolute, as redis-rs reads `unix://./data/…` as host `.` and no path.
///
/// # Errors
/// A URL redis-rs refuses, or a relative socket path; checked before any load is sent.
pub fn parse_redis_url(text: &str) -> Result<String, String> {
    if let Some(path) = text.strip_prefix("unix://")
        && !path.starts_with('/')
    {
        return Err(format!(
            "{text:?}: the socket path must be absolute, e.g. unix:///srv/linkloop/data/redis/redis.sock"
        ));
    }
    redis::Client::open(text).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(text.to_owned())
}

/// A share (`--head-share`, `--conversion-share`, …): a number from 0 to 1.
///
/// # Errors
/// Not a number, or outside 0..=1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?}: expected a share from 0 to 1, e.g. 0.05")),
    }
}

/// `--duration`, `--timeout`: like [`parse_duration`], and more than zero (a run or a request
/// limit of zero measures nothing).
///
/// # Errors
/// What [`parse_duration`] refuses, or zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(d)
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h`, `250us`; a bare number is seconds.
///
/// # Errors
/// A message when the text is not a non-negative duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{text:?}: expected a duration such as 10s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (use us, ms, s, m, h)")),
    };
    let d = Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{text:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{text:?}: at most 365 days"));
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_connections_and_durations_out_of_range_are_usage_errors() {
        assert_eq!(parse_rate("2500").unwrap(), 2500.0);
        assert_eq!(parse_rate("0.5").unwrap(), 0.5);
        for bad in ["0", "-5", "abc", "1e12", "inf", "NaN", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_connections("64").unwrap(), 64);
        assert!(parse_connections("0").is_err() && parse_connections("-1").is_err());
        assert!(parse_duration("365d").is_err(), "no day unit");
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        assert!(parse_duration("8761h").is_err());
        assert!(parse_duration("10000000000000000000").is_err());
        assert!(parse_connections("4096").is_ok() && parse_connections("4097").is_err());
        assert_eq!(parse_positive_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_positive_duration("0s").is_err() && parse_positive_duration("0").is_err());
        assert_eq!(parse_share("0").unwrap(), 0.0);
        assert!(parse_share("1.5").is_err() && parse_share("-0.1").is_err() && parse_share("x").is_err());
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        for bad in ["notaurl", "https://127.0.0.1", "ftp://x", "http://"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        assert!(parse_redis_url("unix:///tmp/r.sock").is_ok() && parse_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_redis_url("unix://./data/redis/redis.sock").is_err());
        assert!(parse_redis_url("http://x").is_err());
        for args in [
            ["-R", "0"],
            ["-R", "1e12"],
            ["-c", "0"],
            ["-c", "30000"],
            ["-d", "10000000000000000000"],
            ["-d", "0s"],
            ["-n", "0"],
            ["--timeout", "0s"],
            ["--head-share", "2"],
        ] {
            let mut argv = vec!["linkloop-loadtest"];
            argv.extend(args);
            argv.push("http://127.0.0.1:1");
            assert!(Opts::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn ua_mix() {
        let m = UaMix::parse("app=2, bot=1").unwrap();
        assert_eq!((m.app, m.mobile, m.desktop, m.bot), (2.0, 0.0, 0.0, 1.0));
        assert!(UaMix::parse("robot=1").is_err());
        assert!(UaMix::parse("bot=-1").is_err());
        assert!(UaMix::parse("bot=0").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let o = Opts::from_args(["http://127.0.0.1:8080"]).unwrap();
        assert_eq!(o.connections, 64);
        assert!(o.rate.is_none() && !o.bots_counted && !o.no_verify);
        assert_eq!(o.client_ips, 131_072);
        let o = Opts::from_args(["-R", "100", "--bots-counted", "true", "--no-verify", "http://x"]).unwrap();
        assert_eq!(o.rate, Some(100.0));
        assert!(o.bots_counted && o.no_verify);
        assert!(Opts::from_args(["--client-ips", "131073", "http://x"]).is_err());
    }
}
