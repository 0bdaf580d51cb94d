//! Who sends the next click request, and when.
//!
//! Every click request gets a ticket `n = 0, 1, 2, …` from one shared counter, whatever
//! connection sends it. In the **closed loop** a connection sends its next request as
//! soon as the previous answer is in. In the **open loop** request `n` is *planned* at
//! `start + n / rate`; a free connection takes the next ticket and sends it at that time.
//! When every connection is stuck on a slow server, tickets keep their planned times, so
//! the queueing delay is part of the measured latency (no coordinated omission).
//!
//! The tokio timer ticks in milliseconds and rounds deadlines *up*, so waiting exactly
//! for the planned time would make every request up to 1 ms late, and that lateness
//! would be charged to the server. Instead a request leaves at most one tick **early**
//! ([`TIMER_SLACK`]), never late unless the tester is saturated, and its latency is
//! measured from the earlier of its planned and its actual send time ([`latency_origin`]):
//! a late request is charged its wait, an early one only its service time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How early a request may leave before its planned time (one timer tick).
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

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
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "rate must be a positive number, got {rate}");
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
        while self.offset(n) < duration {
            n += 1;
        }
        n
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

/// The shared ticket counter and the stop conditions (duration, request count, stop flag).
#[derive(Debug)]
pub struct Dispenser {
    next: AtomicU64,
    /// Tickets `>= limit` are never handed out.
    limit: u64,
    /// Closed loop: no ticket is handed out at or after this instant.
    deadline: Instant,
    schedule: Option<Schedule>,
    stopped: AtomicBool,
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
        }
    }

    /// Open loop: `schedule`, requests planned within `duration`, at most `requests` tickets.
    pub fn open(schedule: Schedule, duration: Duration, requests: Option<u64>) -> Dispenser {
        let limit = schedule.count_within(duration).min(requests.unwrap_or(u64::MAX));
        Dispenser {
            next: AtomicU64::new(0),
            limit,
            deadline: schedule.start + duration,
            schedule: Some(schedule),
            stopped: AtomicBool::new(false),
        }
    }

    /// The next ticket, or `None` when the run is over.
    pub fn claim(&self) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.limit {
            return None;
        }
        match &self.schedule {
            Some(s) => Some(Ticket { n, planned: Some(s.planned(n)) }),
            None if Instant::now() >= self.deadline => None,
            None => Some(Ticket { n, planned: None }),
        }
    }

    /// Ends the run: no more tickets.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether [`Dispenser::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Tickets handed out so far (capped at the limit).
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.limit)
    }

    /// Total tickets of the run when known in advance (open loop, or `--requests`).
    pub fn planned_total(&self) -> Option<u64> {
        (self.limit != u64::MAX).then_some(self.limit)
    }

    /// When the run ends by time (closed loop) or its last planned send (open loop).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Waits until `planned` is at most [`TIMER_SLACK`] away (open loop); returns at once in the
/// closed loop or when the request is already due.
pub async fn pace(planned: Option<Instant>) {
    if let Some(p) = planned {
        let wake = p.checked_sub(TIMER_SLACK).unwrap_or(p);
        if wake > Instant::now() {
            tokio::time::sleep_until(wake.into()).await;
        }
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
    fn latency_origin_takes_the_earlier_of_planned_and_sent() {
        let t = Instant::now();
        let late = t + Duration::from_millis(5);
        assert_eq!(latency_origin(Some(t), late), t);
        assert_eq!(latency_origin(Some(late), t), t);
        assert_eq!(latency_origin(None, t), t);
    }
}
