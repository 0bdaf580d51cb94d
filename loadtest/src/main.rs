//! `linkloop-loadtest`: see the library (`loadtest::run`) for what it does.
//! Exit status: 0 when the run (and its verification) passed, 1 when the verification
//! found a difference, 2 on an error (before the load; or after it, with its measurements
//! still printed: the verification not possible, not a single click request answered, or an
//! open-loop target that stopped answering mid-run), 3 when an open-loop run did not reach its
//! rate (more than 1% of the planned requests unsent) against a target that kept answering,
//! 64 on a usage error (sysexits `EX_USAGE`, as the gateway's own CLI), 130 when quit by a
//! second Ctrl-C (the first ends the load and lets the run finish).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let opts = match loadtest::Opts::try_parse() {
        Ok(opts) => opts,
        // --help and --version print and succeed; anything else is a usage error.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    let json = opts.json.clone();
    let threads = opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("linkloop-loadtest: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        // The first Ctrl-C ends the load (its results and the verification still come);
        // a second one quits at once, whatever the run is doing (exit 130, 128 + SIGINT).
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!(
                "linkloop-loadtest: interrupted: no new requests; finishing the requests in flight, queued \
                 conversions and the verification (Ctrl-C again to quit at once)"
            );
            let _ = stop_tx.send(());
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("linkloop-loadtest: quit");
                std::process::exit(130);
            }
        });
        loadtest::run_until(opts, async {
            // No Ctrl-C handler (the watcher ended without a signal): never stop early.
            if stop_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
    });
    match result {
        Ok(summary) => {
            print!("{}", summary.render());
            if let Some(p) = json {
                println!("summary written to {}", p.display());
            }
            if let Some(e) = &summary.error {
                eprintln!("linkloop-loadtest: {e}");
                ExitCode::from(2)
            } else if !summary.passed() {
                ExitCode::from(1)
            } else if !summary.rate_reached() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("linkloop-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
