//! The `linkloop` binary: `serve`, `mint`, `verify-jump`.
//!
//! Exit codes: 0 success; 1 a check failed (`verify-jump`); 64 bad usage or
//! configuration; 65 bad input data (`mint`); 70 a runtime failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the hot path allocates many small, short-lived buffers (request heads,
/// jump URLs, Redis commands), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use linkloop::config::Config;

/// Largest `linkloop mint --count`: 6 hex digits of note id hold the index.
const MAX_MINT_COUNT: u32 = 10_000_000;
/// Hex digits of the note id that `mint --count N` (N > 1) replaces with the link's index.
const INDEX_HEX_DIGITS: usize = 6;
const _: () = assert!(MAX_MINT_COUNT as u64 <= 1 << (4 * INDEX_HEX_DIGITS));

mod report;

/// What `mint --count` varies between links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Vary {
    /// A distinct note id per link.
    Note,
    /// A distinct campaign tag per link, same note.
    Campaign,
}

#[derive(Debug, Parser)]
#[command(name = "linkloop", version, about = "Tracked-link gateway for notes → Taobao/Tmall/JD")]
struct Cli {
    /// TOML config file (environment variables override it; see docs/config.md).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (starts its own redis-server unless REDIS_URL is set).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080; env LINKLOOP_LISTEN].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Mint a tracked link offline, with the same keys as `serve` on this data dir/config.
    Mint {
        /// RED note id, note URL or share text.
        #[arg(long)]
        note: String,
        /// Creator id.
        #[arg(long)]
        creator: String,
        /// Taobao/Tmall/JD product URL or share text.
        #[arg(long)]
        url: String,
        /// Optional campaign tag.
        #[arg(long)]
        campaign: Option<String>,
        /// Print `{link, platform, item_id, sku_id, note_id}` as JSON (one object per line).
        #[arg(long)]
        json: bool,
        /// Number of links to mint, 1–10,000,000, one per line (for load tests). With N > 1,
        /// link i (0-based) differs from the others in what `--vary` names; product, creator
        /// and issue time are the same for all.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MINT_COUNT)))]
        count: u32,
        /// With `--count` N > 1, what makes the links distinct: `note` (note id = the first 18
        /// hex digits of --note followed by i as 6 hex digits: N notes, so N per-note counters)
        /// or `campaign` (campaign tag `{--campaign or "c"}-{i as 6 hex digits}`, one note).
        #[arg(long, value_enum, default_value_t = Vary::Note)]
        vary: Vary,
    },
    /// Check a jump URL's signature: exit 0 when valid, 1 otherwise.
    VerifyJump {
        /// The jump URL (the `Location` of a redirect).
        url: String,
    },
    /// Per-day clicks, unique visitors, conversions and GMV of one note, creator, item or platform.
    Report {
        #[command(flatten)]
        target: ReportTarget,
        /// First day, YYYY-MM-DD in the configured time zone [default: --to].
        #[arg(long, value_name = "DAY")]
        from: Option<String>,
        /// Last day (included), YYYY-MM-DD [default: today].
        #[arg(long, value_name = "DAY")]
        to: Option<String>,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Sign a conversion callback body and print a ready curl command (for merchant developers).
    SignCallback {
        /// Merchant id (`Linkloop-Merchant`).
        #[arg(long)]
        merchant: String,
        /// Merchant secret for `--kid` [default: that merchant's secret for `--kid` in the config].
        #[arg(long, env = "LINKLOOP_MERCHANT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Key id of the secret.
        #[arg(long, default_value_t = 1)]
        kid: u8,
        /// File holding the exact JSON body to send (signed byte for byte).
        #[arg(long, value_name = "FILE")]
        body: PathBuf,
        /// Endpoint [default: {public_url}/v1/conversions; use …/v1/conversions/batch for a batch].
        #[arg(long)]
        url: Option<String>,
    },
}

/// What `linkloop report` reports on: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ReportTarget {
    /// RED note id (24 hex characters).
    #[arg(long, value_name = "NOTE_ID")]
    note: Option<String>,
    /// Creator id.
    #[arg(long, value_name = "CREATOR_ID")]
    creator: Option<String>,
    /// Marketplace item, e.g. jd:100012043978.
    #[arg(long, value_name = "PLATFORM:ITEM_ID")]
    item: Option<String>,
    /// Marketplace: taobao, tmall or jd.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

impl ReportTarget {
    /// `(dimension, id)`.
    fn dimension(&self) -> (&'static str, &str) {
        let pick =
            [("note", &self.note), ("creator", &self.creator), ("item", &self.item), ("platform", &self.platform)];
        pick.into_iter().find_map(|(d, v)| v.as_deref().map(|v| (d, v))).unwrap_or(("note", ""))
    }
}

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE, sysexits.h) like configuration errors; `--help` and
    // `--version` print to stdout and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("linkloop: configuration error: {e:#}");
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Command::Serve { listen } => serve(config, listen),
        Command::Mint { note, creator, url, campaign, json, count, vary } => {
            let req = linkloop::link::MintRequest {
                note: &note,
                creator_id: &creator,
                url: &url,
                campaign: campaign.as_deref(),
            };
            mint(&config, &req, json, count, vary)
        }
        Command::VerifyJump { url } => verify_jump(&config, &url),
        Command::Report { target, from, to, format } => {
            let (dim, id) = target.dimension();
            report::run(&config, dim, id, from.as_deref(), to.as_deref(), &format)
        }
        Command::SignCallback { merchant, secret, kid, body, url } => {
            let url = url.unwrap_or_else(|| format!("{}/v1/conversions", config.public_url()));
            let Some(secret) = secret.or_else(|| merchant_secret(&config, &merchant, kid)) else {
                if cli.config.is_none() {
                    eprintln!(
                        "linkloop: no secret for {merchant:?}: pass --secret (or LINKLOOP_MERCHANT_SECRET), \
                         or --config with that merchant's [[merchants]] entry"
                    );
                } else {
                    eprintln!(
                        "linkloop: no --secret, and the config has no [[merchants]] entry {merchant:?} with a secret of kid {kid}"
                    );
                }
                return ExitCode::from(64);
            };
            sign_callback(&merchant, &secret, kid, &body, &url, config.callback_tolerance_seconds)
        }
    }
}

fn serve(mut config: Config, listen: Option<SocketAddr>) -> ExitCode {
    if let Some(l) = listen {
        config.listen = l;
    }
    linkloop::telemetry::init(config.log_json);
    let single = config.worker_threads == 1
        || (config.worker_threads == 0 && std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1"));
    let built = if single {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if config.worker_threads > 1 {
            b.worker_threads(config.worker_threads);
        }
        b.enable_all().build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linkloop: cannot start runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let code = runtime.block_on(async {
        let app = match linkloop::app::Application::build(config).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("linkloop: {e:#}");
                return ExitCode::from(64);
            }
        };
        let state = app.state();
        tracing::info!(listen.port = app.port(), public_url = %state.public_url, "linkloop serving");
        match app.run_until_stopped(linkloop::app::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linkloop: {e:#}");
                ExitCode::from(70)
            }
        }
    });
    // Everything that matters is flushed and stopped by now ("stopped" is logged): do not
    // wait on idle connection tasks and blocking-pool threads.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

fn mint(config: &Config, req: &linkloop::link::MintRequest<'_>, json: bool, count: u32, vary: Vary) -> ExitCode {
    let secrets = match config.secrets() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linkloop: {e:#}");
            return ExitCode::from(64);
        }
    };
    if secrets.dev_keys {
        eprintln!(
            "linkloop: WARNING: using generated development keys from {} (set [keys] in a config file for production)",
            config.data_dir.join("dev-keys.toml").display()
        );
    }
    let now_s = u32::try_from(linkloop::click::now_ms() / 1000).unwrap_or(u32::MAX);
    let public_url = config.public_url();
    // The first link goes through the same path as `POST /v1/links`: it validates every input
    // and names the field at fault.
    let first = match linkloop::link::mint(req, &secrets.link_keys, &public_url, now_s) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("linkloop: {e} [{}]", e.code);
            return ExitCode::from(65);
        }
    };
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let written = if count == 1 {
        write_minted(&mut out, &first, json)
    } else {
        mint_many(&mut out, req, &first, &secrets.link_keys, &public_url, now_s, (count, vary), json)
    };
    match written.and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `linkloop mint --count N | head` is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linkloop: writing links: {e}");
            ExitCode::from(70)
        }
    }
}

/// Writes one minted link: the URL, or the `--json` object, and a newline.
fn write_minted(out: &mut impl std::io::Write, m: &linkloop::link::Minted, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, m)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", m.link)
    }
}

/// `mint --count N`, N > 1: link i is for the note id with its last [`INDEX_HEX_DIGITS`] hex
/// digits replaced by i (`--vary note`), or has campaign `{campaign or "c"}-{i:06x}`
/// (`--vary campaign`). Inputs were validated by minting `first`; each further link is only
/// an encode + HMAC with the keyring built once (about a microsecond).
#[allow(clippy::too_many_arguments)]
fn mint_many(
    out: &mut impl std::io::Write,
    req: &linkloop::link::MintRequest<'_>,
    first: &linkloop::link::Minted,
    keys: &linkloop::signing::Keyring,
    public_url: &str,
    now_s: u32,
    (count, vary): (u32, Vary),
    json: bool,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let product = linkloop::platform::parse_product(req.url).map_err(std::io::Error::other)?;
    let prefix_len = first.note_id.len() - INDEX_HEX_DIGITS;
    let mut claims = linkloop::link::LinkClaims {
        note_id: first.note_id.clone(),
        creator_id: req.creator_id.to_owned(),
        product,
        campaign: req.campaign.map(str::to_owned),
        issued_at: now_s,
    };
    let mut minted = first.clone();
    // Campaign tags are at most 32 characters: keep 32 - 7 of the given one before `-{i:06x}`.
    let base: String = req.campaign.unwrap_or("c").chars().take(32 - 1 - INDEX_HEX_DIGITS).collect();
    for i in 0..count {
        match vary {
            Vary::Note => {
                claims.note_id.truncate(prefix_len);
                let _ = write!(claims.note_id, "{i:0width$x}", width = INDEX_HEX_DIGITS);
            }
            Vary::Campaign => {
                claims.campaign = Some(format!("{base}-{i:0width$x}", width = INDEX_HEX_DIGITS));
            }
        }
        let token = linkloop::link::encode(&claims, keys).map_err(std::io::Error::other)?;
        if json {
            minted.link.clear();
            let _ = write!(minted.link, "{public_url}/j/{token}");
            minted.note_id.clone_from(&claims.note_id);
            write_minted(out, &minted, true)?;
        } else {
            writeln!(out, "{public_url}/j/{token}")?;
        }
    }
    Ok(())
}

fn verify_jump(config: &Config, url: &str) -> ExitCode {
    if config.keys.jump.is_empty() && !config.data_dir.join("dev-keys.toml").exists() {
        eprintln!(
            "linkloop: no jump keys: none in the config and no {} (pass --config or set LINKLOOP_DATA_DIR)",
            config.data_dir.join("dev-keys.toml").display()
        );
        return ExitCode::from(64);
    }
    let secrets = match config.secrets() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linkloop: {e:#}");
            return ExitCode::from(64);
        }
    };
    match linkloop::jump::verify(url, &secrets.jump_keys) {
        Ok(c) => {
            println!(
                "valid: platform={} item_id={} sku_id={} click_token={} ts_ms={} kid={}",
                c.product.platform,
                c.product.item_id,
                c.product.sku_id.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                c.click_token.hyphenated(),
                c.ts_ms,
                c.kid
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("invalid: {e}");
            ExitCode::from(1)
        }
    }
}

/// The configured secret of `merchant` for `kid`, if any.
fn merchant_secret(config: &Config, merchant: &str, kid: u8) -> Option<String> {
    use secrecy::ExposeSecret;
    let m = config.merchants.iter().find(|m| m.id == merchant)?;
    m.secrets.iter().find(|k| k.kid == kid).map(|k| k.secret.expose_secret().to_owned())
}

fn sign_callback(
    merchant: &str,
    secret: &str,
    kid: u8,
    body: &std::path::Path,
    url: &str,
    tolerance_s: u64,
) -> ExitCode {
    if secret.len() < linkloop::signing::MIN_SECRET_BYTES {
        eprintln!(
            "linkloop: --secret must be the merchant's secret from the config (at least {} bytes); got {} bytes",
            linkloop::signing::MIN_SECRET_BYTES,
            secret.len()
        );
        return ExitCode::from(64);
    }
    let bytes = match std::fs::read(body) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("linkloop: reading {}: {e}", body.display());
            return ExitCode::from(66);
        }
    };
    let t = linkloop::click::now_ms() / 1000;
    let sig = linkloop::conversion::auth::sign_body(secret.as_bytes(), kid, t, &bytes);
    println!("# valid for {tolerance_s} s around t={t}; sends the file byte for byte");
    println!("curl -sS -w '\\nHTTP %{{http_code}}\\n' -X POST {} \\", shell_quote(url));
    println!("  -H 'Content-Type: application/json' \\");
    println!("  -H {} \\", shell_quote(&format!("Linkloop-Merchant: {merchant}")));
    println!("  -H {} \\", shell_quote(&format!("Linkloop-Signature: {sig}")));
    println!("  --data-binary @{}", shell_quote(&body.display().to_string()));
    ExitCode::SUCCESS
}

/// Single-quotes `s` for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
