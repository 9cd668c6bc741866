//! How far a long command has got, on stderr: one line redrawn in place on a terminal, with a
//! bar when the total is known; otherwise a plain line every ten seconds (none for a command
//! that ends sooner), so a log or a CI transcript keeps a readable history rather than
//! thousands of redraws.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// How often the terminal line is redrawn, at most.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// How often a plain line is written when stderr is not a terminal, at most.
const LINE_EVERY: Duration = Duration::from_secs(10);
const BAR_WIDTH: u64 = 24;

pub(crate) struct Meter {
    what: &'static str,
    unit: &'static str,
    total: Option<u64>,
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
    shown: Option<u64>,
}

impl Meter {
    /// A meter for `what` ("verify", "simulate: paths"), counting `unit`s ("learners") up to
    /// `total` when it is known.
    pub(crate) fn new(what: &'static str, unit: &'static str, total: Option<u64>) -> Meter {
        Meter::to(std::io::stderr().is_terminal(), what, unit, total)
    }

    fn to(terminal: bool, what: &'static str, unit: &'static str, total: Option<u64>) -> Meter {
        let started = Instant::now();
        Meter {
            what,
            unit,
            total,
            terminal,
            started,
            // a plain line waits its ten seconds from the start too
            last: (!terminal).then_some(started),
            shown: None,
        }
    }

    /// `done` units so far; shown if the last line is old enough (on a terminal, also when
    /// the total is reached).
    pub(crate) fn update(&mut self, done: u64) {
        let every = if self.terminal {
            REDRAW_EVERY
        } else {
            LINE_EVERY
        };
        let now = Instant::now();
        let reached = self.terminal && self.total == Some(done);
        if !reached && self.last.is_some_and(|last| now - last < every) {
            return;
        }
        self.show(done);
        self.last = Some(now);
    }

    /// The last count, if anything was shown before and not this count; ends the terminal
    /// line.
    pub(crate) fn finish(&mut self, done: u64) {
        if self.shown.is_some_and(|shown| shown != done) {
            self.show(done);
        }
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }

    fn show(&mut self, done: u64) {
        let line = self.line(done);
        if self.terminal {
            // \x1b[K clears what a longer earlier line left on the right
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        self.shown = Some(done);
    }

    fn line(&self, done: u64) -> String {
        let (what, unit) = (self.what, self.unit);
        let elapsed = self.started.elapsed().as_secs_f64();
        match self.total {
            Some(total) if total > 0 => {
                let filled = (done.min(total) * BAR_WIDTH / total) as usize;
                let bar = format!(
                    "{}{}",
                    "#".repeat(filled),
                    " ".repeat(BAR_WIDTH as usize - filled)
                );
                format!("{what}: [{bar}] {done}/{total} {unit} ({elapsed:.1}s)")
            }
            _ => format!("{what}: {done} {unit} ({elapsed:.1}s)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_total_draws_a_bar_in_proportion() {
        let meter = Meter::new("simulate: paths", "learners", Some(8));
        let line = meter.line(2);
        assert!(
            line.starts_with("simulate: paths: [######                  ] 2/8 learners ("),
            "{line}"
        );
        let line = Meter::new("verify", "learners", None).line(12);
        assert!(line.starts_with("verify: 12 learners ("), "{line}");
    }

    #[test]
    fn plain_lines_come_every_ten_seconds_and_none_for_a_short_run() {
        let mut meter = Meter::to(false, "rebuild", "learners", Some(100));
        meter.update(1);
        meter.update(100);
        meter.finish(100);
        assert_eq!(
            meter.shown, None,
            "a run shorter than ten seconds says nothing"
        );

        let mut meter = Meter::to(false, "rebuild", "learners", Some(100));
        meter.last = Some(Instant::now() - LINE_EVERY);
        meter.update(40);
        assert_eq!(meter.shown, Some(40));
        meter.update(50);
        assert_eq!(meter.shown, Some(40), "too soon after the last line");
        meter.finish(100);
        assert_eq!(
            meter.shown,
            Some(100),
            "a run that said something says where it ended"
        );
    }

    #[test]
    fn a_terminal_line_is_redrawn_and_always_shows_the_total() {
        let mut meter = Meter::to(true, "simulate: paths", "learners", Some(3));
        meter.update(1);
        assert_eq!(meter.shown, Some(1));
        meter.update(2);
        assert_eq!(meter.shown, Some(1), "redrawn at most every 100 ms");
        meter.update(3);
        assert_eq!(meter.shown, Some(3));
    }
}
