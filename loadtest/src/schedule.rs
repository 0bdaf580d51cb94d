//! Who sends the next click request, and when.
//!
//! Every click request gets a ticket `n = 0, 1, 2, …` from one shared counter, whatever
//! connection sends it. In the **closed loop** a connection sends its next request as
//! soon as the previous answer is in. In the **open loop** request `n` is *planned* at
//! `start + n / rate`; a free connection takes the next ticket and sends it at that time.
//! When every connection is stuck on a slow server, tickets keep their planned times, so
//! the queueing delay is part of the measured latency (no coordinated omission).
//!
//! **Pacing.** The tokio timer ticks in milliseconds: requests woken by it leave in bursts,
//! every request due within the same millisecond at once (17 at 17,000/s), and each burst
//! queues at the target behind itself, which real traffic from many clients does not do.
//! So the open loop is paced by one task ([`Pacer::run`]) that waits on a Linux
//! `timerfd` (`timerfd_create(2)`: nanosecond deadlines, woken through the runtime's own
//! `epoll`, no second thread) and releases the tickets due within the next
//! [`PACER_TICK`] to the connections waiting with a claimed ticket: at most one wake-up per
//! tick, requests leaving a few at a time (one or two at 17,000/s), at the planned rate.
//! Permits go to the waiting connections first come, first served, which is claim order
//! on one thread; with `--threads` above 1 two connections may swap, and one request then
//! leaves up to one interval early (measured from its send time, as below). A request that
//! leaves a little early is measured from its actual send time, a late one from its planned
//! time ([`latency_origin`]): a late request is charged its wait, an early one only its
//! service time.
//!
//! Either loop hands out **no ticket at or after `start + duration`**, so a run always ends
//! about on time: the requests in flight then get their `--timeout`, nothing more. In the
//! open loop a tester (or target) that cannot keep up falls behind schedule, and the
//! tickets still unclaimed at the end are never sent: [`Dispenser::tally`] counts them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The pacer's step: it wakes at most once per tick and releases every request planned
/// before the next tick, each at most this early. About a timer's usual oversleep (Linux's
/// default timer slack is 50 µs, `prctl(2)` `PR_SET_TIMERSLACK`); a shorter step costs the
/// tester a wake-up per request at high rates (at 50,000/s and more it would fall behind).
pub const PACER_TICK: Duration = Duration::from_micros(100);
/// Longest single wait of the pacer, so a stop is seen within it at any rate.
const PACER_MAX_WAIT: Duration = Duration::from_millis(20);

/// Lowest open-loop rate, requests/s (one request per 1,000 s).
pub const MIN_RATE: f64 = 0.001;
/// Highest open-loop rate, requests/s.
pub const MAX_RATE: f64 = 1e9;

/// Open-loop plan: request `n` is due at `start + n / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    /// A plan of `rate` requests per second from `start`.
    ///
    /// # Errors
    /// A rate that is not a positive finite number.
    pub fn new(start: Instant, rate: f64) -> anyhow::Result<Schedule> {
        // Outside this range the plan's float arithmetic loses the nanosecond (send times
        // rounded together, offsets overflowing a `Duration`); no target is that fast or slow.
        anyhow::ensure!(
            rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate),
            "rate must be from {MIN_RATE} to {MAX_RATE:e} requests/s, got {rate}"
        );
        Ok(Schedule { start, rate })
    }

    /// Offset of request `n` from the start.
    pub fn offset(&self, n: u64) -> Duration {
        #[allow(clippy::cast_precision_loss)] // n far below 2^53
        let s = n as f64 / self.rate;
        Duration::from_secs_f64(s)
    }

    /// Planned send time of request `n`.
    pub fn planned(&self, n: u64) -> Instant {
        self.start + self.offset(n)
    }

    /// Requests planned in the first `duration` (those with offset `< duration`).
    pub fn count_within(&self, duration: Duration) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, bounded
        let approx = (duration.as_secs_f64() * self.rate).ceil() as u64;
        // Correct float rounding at the boundary so that count == #{n : offset(n) < duration}.
        let mut n = approx.saturating_sub(1);
        while n > 0 && self.offset(n - 1) >= duration {
            n -= 1;
        }
        while n < u64::MAX && self.offset(n) < duration {
            n += 1;
        }
        n
    }

    /// The rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// A claimed request: its number and, in the open loop, its planned send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Sequence number, from 0.
    pub n: u64,
    /// Planned send time (open loop only).
    pub planned: Option<Instant>,
}

/// Open loop: the planned requests of the run against those sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Requests planned from the start to the end of the run (`--duration`, or the stop
    /// when interrupted), at most `--requests`.
    pub planned: u64,
    /// Tickets handed to a connection and tried (failed tries are in the error counts).
    pub sent: u64,
    /// Planned but never sent: the run ended behind schedule (`planned - sent`, at least 0).
    pub not_sent: u64,
}

/// The shared ticket counter and the stop conditions (duration, request count, stop flag).
#[derive(Debug)]
pub struct Dispenser {
    /// Tickets handed out (a claim refused for time or stop does not count).
    next: AtomicU64,
    /// Tickets `>= limit` are never handed out.
    limit: u64,
    /// No ticket is handed out at or after this instant (`start + duration`).
    deadline: Instant,
    schedule: Option<Schedule>,
    stopped: AtomicBool,
    /// When [`Dispenser::stop`] was first called.
    stopped_at: OnceLock<Instant>,
    /// Tickets handed back unsent ([`Dispenser::give_back`]).
    returned: AtomicU64,
    /// Open loop: one permit per ticket released by the pacer; a claimed ticket waits for
    /// one ([`Dispenser::pace`]). Closed at the stop.
    gate: Semaphore,
    /// Open loop: tickets released so far (`n < released` are due).
    released: AtomicU64,
}

impl Dispenser {
    /// Closed loop from `start` for `duration`, at most `requests` tickets.
    pub fn closed(start: Instant, duration: Duration, requests: Option<u64>) -> Dispenser {
        Dispenser {
            next: AtomicU64::new(0),
            limit: requests.unwrap_or(u64::MAX),
            deadline: start + duration,
            schedule: None,
            stopped: AtomicBool::new(false),
            stopped_at: OnceLock::new(),
            returned: AtomicU64::new(0),
            gate: Semaphore::new(0),
            released: AtomicU64::new(0),
        }
    }

    /// Open loop: `schedule`, requests planned within `duration`, at most `requests` tickets;
    /// none handed out at or after `start + duration`, however far behind schedule.
    pub fn open(schedule: Schedule, duration: Duration, requests: Option<u64>) -> Dispenser {
        let limit = schedule.count_within(duration).min(requests.unwrap_or(u64::MAX));
        Dispenser {
            next: AtomicU64::new(0),
            limit,
            deadline: schedule.start + duration,
            schedule: Some(schedule),
            stopped: AtomicBool::new(false),
            stopped_at: OnceLock::new(),
            returned: AtomicU64::new(0),
            gate: Semaphore::new(0),
            released: AtomicU64::new(0),
        }
    }

    /// The next ticket, or `None` when the run is over: stopped, `start + duration` reached
    /// (in the open loop too, even when tickets planned before it are still unclaimed), or
    /// every ticket handed out.
    pub fn claim(&self) -> Option<Ticket> {
        self.claim_at(Instant::now())
    }

    /// [`Dispenser::claim`] at the time `now`.
    pub fn claim_at(&self, now: Instant) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) || now >= self.deadline {
            return None;
        }
        // Never past the limit, so `next` counts exactly the tickets handed out.
        let n =
            self.next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.limit).then_some(n + 1)).ok()?;
        Some(Ticket { n, planned: self.schedule.as_ref().map(|s| s.planned(n)) })
    }

    /// A claimed ticket that will not be sent after all (the run ended while its
    /// connection was being replaced): counted as not sent.
    pub fn give_back(&self) {
        self.returned.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether no ticket will be handed out any more (stopped or past `start + duration`).
    pub fn is_over(&self) -> bool {
        self.is_stopped() || Instant::now() >= self.deadline
    }

    /// Ends the run: no more tickets, and connections waiting in [`Dispenser::pace`] are let go.
    pub fn stop(&self) {
        let _ = self.stopped_at.set(Instant::now());
        self.stopped.store(true, Ordering::Relaxed);
        self.gate.close();
    }

    /// Open loop: waits until the pacer releases a ticket for this claimed request (at most
    /// [`PACER_TICK`] before its planned time; released tickets go to the waiting connections
    /// first come, first served). `false` when the run was stopped meanwhile: the request is
    /// not to be sent ([`Dispenser::give_back`]). Returns `true` at once in the closed loop.
    /// Call it once per claimed ticket.
    pub async fn pace(&self) -> bool {
        if self.schedule.is_none() {
            return true;
        }
        match self.gate.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Open loop: releases every ticket planned up to `now + PACER_TICK` to the connections
    /// waiting in [`Dispenser::pace`]; returns the planned time of the next ticket, or `None`
    /// once every ticket is released or the run is stopped (and always in the closed loop).
    pub fn release_due(&self, now: Instant) -> Option<Instant> {
        let s = self.schedule.as_ref()?;
        if self.is_stopped() {
            return None;
        }
        let due = s.count_within((now + PACER_TICK).saturating_duration_since(s.start)).min(self.limit);
        let before = self.released.load(Ordering::Relaxed);
        if due > before {
            // A semaphore holds at most `MAX_PERMITS`; what does not fit is released next time.
            let room = Semaphore::MAX_PERMITS.saturating_sub(self.gate.available_permits());
            let add = usize::try_from(due - before).unwrap_or(usize::MAX).min(room);
            self.gate.add_permits(add);
            self.released.fetch_add(add as u64, Ordering::Relaxed);
        }
        let next = self.released.load(Ordering::Relaxed);
        (next < self.limit).then(|| s.planned(next))
    }

    /// Whether [`Dispenser::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Tickets handed out so far and not given back.
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::Relaxed).saturating_sub(self.returned.load(Ordering::Relaxed))
    }

    /// Open loop: planned, sent and not sent, once the connections are done (`None` in the
    /// closed loop, which plans nothing). Interrupted by [`Dispenser::stop`], only the
    /// requests planned before the stop count as planned.
    pub fn tally(&self) -> Option<Tally> {
        let s = self.schedule.as_ref()?;
        let planned = match self.stopped_at.get() {
            Some(&at) if at < self.deadline => s.count_within(at.saturating_duration_since(s.start)).min(self.limit),
            _ => self.limit,
        };
        let sent = self.issued();
        // Interrupted: a ticket released (up to a tick early) before the stop counts as planned.
        let planned = planned.max(sent.min(self.limit));
        Some(Tally { planned, sent, not_sent: planned.saturating_sub(sent) })
    }

    /// Total tickets of the run when known in advance (open loop, or `--requests`).
    pub fn planned_total(&self) -> Option<u64> {
        (self.limit != u64::MAX).then_some(self.limit)
    }

    /// `start + duration`: no ticket is handed out at or after it (either loop).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// The open-loop pacer's timer: a Linux `timerfd` (`timerfd_create(2)`, `CLOCK_MONOTONIC`),
/// registered with the runtime's `epoll`. Made before the connections are opened, so a run
/// that cannot be paced fails before its load, not during it.
pub struct Pacer {
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Pacer {
    /// Creates and registers the timer (call it inside the runtime).
    ///
    /// # Errors
    /// `timerfd_create(2)` failed (e.g. no file descriptor left), or the runtime could not
    /// register it.
    pub fn new() -> std::io::Result<Pacer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags};
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // An `OwnedFd`, moved in: the descriptor stays open and the same for the `AsyncFd`'s
        // whole life, which is what the constructor's deprecation (tokio #8587, I/O safety)
        // asks of it.
        #[allow(deprecated)]
        let timer = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Pacer { timer })
    }

    /// Releases each ticket of `d` about on its planned time ([`Dispenser::release_due`]),
    /// waking at most once per [`PACER_TICK`]; returns once every ticket is released or the
    /// run is stopped, at once in the closed loop. Run it as a task on the load's runtime.
    ///
    /// # Errors
    /// The timer could not be armed or read (`timerfd_settime(2)`, `read(2)`): the run cannot
    /// be paced any further.
    pub async fn run(self, d: Arc<Dispenser>) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec};
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        while let Some(next) = d.release_due(Instant::now()) {
            // Until the next ticket is within a tick: never less than a tick (a zero value
            // would disarm the timer), never so long that a stop goes unseen.
            let wait = next.saturating_duration_since(Instant::now() + PACER_TICK).clamp(PACER_TICK, PACER_MAX_WAIT);
            let value = Timespec::try_from(wait).map_err(|_| std::io::Error::other("pacer wait out of range"))?;
            let spec = Itimerspec { it_interval: zero, it_value: value };
            rustix::time::timerfd_settime(self.timer.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            let mut ready = self.timer.readable().await?;
            // The expiration count (8 bytes); the timer is one-shot, so it only says "fired".
            // Read before the timer is armed again, so its next expiry is a new edge.
            let mut count = [0u8; 8];
            match rustix::io::read(ready.get_inner(), &mut count) {
                Ok(_) | Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The instant a request's latency is measured from: the earlier of its planned and actual
/// send times. Sent late, its wait counts; sent early (by at most a timer tick), only its
/// service time counts.
pub fn latency_origin(planned: Option<Instant>, sent: Instant) -> Instant {
    match planned {
        Some(p) if p < sent => p,
        _ => sent,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_exact_multiples() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0).unwrap();
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(2500), Duration::from_millis(2500));
        assert_eq!(s.planned(3), t0 + Duration::from_millis(3));
        let s = Schedule::new(t0, 3.0).unwrap();
        assert_eq!(s.count_within(Duration::from_secs(1)), 3);
        assert_eq!(s.count_within(Duration::from_millis(1001)), 4);
        let s = Schedule::new(t0, 1000.0).unwrap();
        assert_eq!(s.count_within(Duration::from_secs(2)), 2000);
        assert!(Schedule::new(t0, 0.0).is_err() && Schedule::new(t0, f64::NAN).is_err());
    }

    #[test]
    fn open_dispenser_hands_out_exactly_the_planned_tickets() {
        let t0 = Instant::now();
        let d = Dispenser::open(Schedule::new(t0, 100.0).unwrap(), Duration::from_secs(2), None);
        let tickets: Vec<Ticket> = std::iter::from_fn(|| d.claim()).collect();
        assert_eq!(tickets.len(), 200);
        assert_eq!(tickets[10].planned, Some(t0 + Duration::from_millis(100)));
        assert!(tickets.windows(2).all(|w| w[1].n == w[0].n + 1));
        let d = Dispenser::open(Schedule::new(t0, 100.0).unwrap(), Duration::from_secs(2), Some(5));
        assert_eq!(std::iter::from_fn(|| d.claim()).count(), 5);
        assert_eq!(d.planned_total(), Some(5));
    }

    #[test]
    fn no_ticket_is_handed_out_after_the_end_and_the_rest_count_as_not_sent() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let d = Dispenser::open(Schedule::new(t0, 100.0).unwrap(), Duration::from_secs(2), None);
        // Far behind schedule: 50 tickets claimed by 1.9 s (190 were due), then the end.
        let early: Vec<Ticket> = (0..50).map_while(|_| d.claim_at(at(1900))).collect();
        assert_eq!(early.len(), 50);
        assert_eq!(early[49].planned, Some(at(490)), "a late ticket keeps its planned time");
        assert!(d.claim_at(at(2000)).is_none() && d.claim_at(at(5000)).is_none());
        assert_eq!(d.tally(), Some(Tally { planned: 200, sent: 50, not_sent: 150 }));
        // A ticket handed back unsent (its connection was being replaced at the end).
        d.give_back();
        assert_eq!(d.tally(), Some(Tally { planned: 200, sent: 49, not_sent: 151 }));
        // The highest rate: 10^9 tickets planned, none handed out after the end.
        let d = Dispenser::open(Schedule::new(t0, MAX_RATE).unwrap(), Duration::from_secs(1), None);
        let planned = d.planned_total().unwrap();
        assert_eq!(planned, 1_000_000_000);
        assert!(d.claim_at(at(999)).is_some() && d.claim_at(at(1000)).is_none());
        assert_eq!(d.tally(), Some(Tally { planned, sent: 1, not_sent: planned - 1 }));
        // Keeping up: nothing unsent.
        let d = Dispenser::open(Schedule::new(t0, 100.0).unwrap(), Duration::from_secs(2), Some(30));
        assert_eq!(std::iter::from_fn(|| d.claim_at(t0)).count(), 30);
        assert_eq!(d.tally(), Some(Tally { planned: 30, sent: 30, not_sent: 0 }));
        // The closed loop plans nothing.
        assert!(Dispenser::closed(t0, Duration::from_secs(1), Some(5)).tally().is_none());
    }

    #[test]
    fn interrupted_open_loop_counts_only_what_was_planned_before_the_stop() {
        let t0 = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        let d = Dispenser::open(Schedule::new(t0, 100.0).unwrap(), Duration::from_secs(60), None);
        assert_eq!(std::iter::from_fn(|| d.claim()).take(10).count(), 10);
        d.stop();
        assert!(d.claim().is_none() && d.is_over());
        let t = d.tally().unwrap();
        // Stopped a bit over 1 s after the start: about 100 planned by then, not 6000.
        assert!((100..6000).contains(&t.planned), "{t:?}");
        assert_eq!((t.sent, t.not_sent), (10, t.planned - 10));
    }

    #[test]
    fn closed_dispenser_stops_by_count_time_or_flag() {
        let d = Dispenser::closed(Instant::now(), Duration::from_secs(60), Some(7));
        assert_eq!(std::iter::from_fn(|| d.claim()).count(), 7);
        let d = Dispenser::closed(Instant::now(), Duration::ZERO, None);
        assert!(d.claim().is_none());
        let d = Dispenser::closed(Instant::now(), Duration::from_secs(60), None);
        assert!(d.claim().is_some());
        d.stop();
        assert!(d.claim().is_none() && d.is_stopped());
    }

    #[test]
    fn the_pacer_releases_tickets_planned_within_a_tick_and_names_the_next() {
        let t0 = Instant::now();
        // 1,000/s for 10 ms: tickets 0..9 at t0 + n ms.
        let d = Dispenser::open(Schedule::new(t0, 1000.0).unwrap(), Duration::from_millis(10), None);
        assert_eq!(d.release_due(t0), Some(t0 + Duration::from_millis(1)));
        assert_eq!(d.gate.available_permits(), 1, "ticket 0 (due at t0)");
        // 20 µs short of ticket 3: within a tick, so tickets 1..3 go too.
        let next = d.release_due(t0 + Duration::from_micros(2980));
        assert_eq!(next, Some(t0 + Duration::from_millis(4)));
        assert_eq!(d.gate.available_permits(), 4);
        assert_eq!(d.release_due(t0 + Duration::from_micros(2990)), next, "nothing new is due");
        assert_eq!(d.gate.available_permits(), 4);
        // Long after the end: the rest, up to the limit, then nothing more.
        assert_eq!(d.release_due(t0 + Duration::from_secs(5)), None);
        assert_eq!(d.gate.available_permits(), 10);
        assert_eq!(d.released.load(Ordering::Relaxed), 10);
        // The closed loop is not paced.
        let c = Dispenser::closed(t0, Duration::from_secs(1), None);
        assert_eq!(c.release_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(c.gate.available_permits(), 0);
    }

    #[test]
    fn the_pacer_stops_releasing_once_stopped_and_respects_a_request_limit() {
        let t0 = Instant::now();
        let d = Dispenser::open(Schedule::new(t0, 1000.0).unwrap(), Duration::from_secs(10), Some(3));
        assert_eq!(d.release_due(t0 + Duration::from_secs(1)), None, "3 tickets, all due");
        assert_eq!(d.gate.available_permits(), 3);
        let d = Dispenser::open(Schedule::new(t0, 1000.0).unwrap(), Duration::from_secs(10), None);
        d.stop();
        assert_eq!(d.release_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(d.gate.available_permits(), 0);
    }

    #[tokio::test]
    async fn a_claimed_ticket_waits_for_its_release_and_a_stop_lets_it_go_unsent() {
        let t0 = Instant::now();
        let d = Arc::new(Dispenser::open(Schedule::new(t0, 1.0).unwrap(), Duration::from_secs(100), None));
        // Ticket 0 is due at once, ticket 1 only in a second.
        assert_eq!(d.release_due(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.claim_at(t0).map(|t| t.n), Some(0));
        assert!(d.pace().await, "ticket 0 was released");
        assert_eq!(d.claim_at(t0).map(|t| t.n), Some(1));
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.pace().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "ticket 1 is not released yet");
        d.stop();
        assert!(!waiting.await.unwrap(), "stopped: not to be sent");
        // Closed loop: never waits.
        assert!(Dispenser::closed(t0, Duration::from_secs(1), None).pace().await);
    }

    #[tokio::test]
    async fn the_pacer_releases_every_ticket_and_ends() {
        let d =
            Arc::new(Dispenser::open(Schedule::new(Instant::now(), 2000.0).unwrap(), Duration::from_millis(50), None));
        Pacer::new().unwrap().run(d.clone()).await.unwrap();
        assert_eq!(d.gate.available_permits(), 100, "50 ms at 2,000/s");
        assert!(Instant::now() >= d.schedule.unwrap().planned(99) - PACER_TICK, "none released more than a tick early");
        // Stopped: returns without releasing the rest.
        let d = Arc::new(Dispenser::open(Schedule::new(Instant::now(), 1.0).unwrap(), Duration::from_secs(100), None));
        d.stop();
        Pacer::new().unwrap().run(d.clone()).await.unwrap();
        assert_eq!(d.gate.available_permits(), 0);
        // The closed loop is not paced.
        Pacer::new().unwrap().run(Arc::new(Dispenser::closed(Instant::now(), Duration::ZERO, None))).await.unwrap();
    }

    #[test]
    fn latency_origin_takes_the_earlier_of_planned_and_sent() {
        let t = Instant::now();
        let late = t + Duration::from_millis(5);
        assert_eq!(latency_origin(Some(t), late), t);
        assert_eq!(latency_origin(Some(late), t), t);
        assert_eq!(latency_origin(None, t), t);
    }

    #[test]
    fn rates_outside_the_plannable_range_are_refused() {
        let now = Instant::now();
        for bad in [0.0, -1.0, 1e-20, 1e-4, 1e10, 1e19, f64::INFINITY, f64::NAN] {
            assert!(Schedule::new(now, bad).is_err(), "rate {bad}");
        }
        for ok in [MIN_RATE, 1.0, 24_000.0, MAX_RATE] {
            assert!(Schedule::new(now, ok).is_ok(), "rate {ok}");
        }
    }
}
