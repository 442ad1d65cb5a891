//! The progress every long stage reports: a bar on a terminal; where standard error
//! is not one (a log, `make all | tee log`, CI), a plain line every
//! [`LINE_INTERVAL`] with done/total, rate and time left, so a long stage is never
//! minutes of silence.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a line is written where there is no terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// What a stage counts.
#[derive(Debug, Clone, Copy)]
pub enum Units {
    /// Things, by this name: "images", "steps".
    Count(&'static str),
    /// Bytes, written as kB/MB/GB.
    Bytes,
}

/// A stage's progress; finishes (stopping its lines) when dropped.
pub struct Progress {
    bar: ProgressBar,
    lines: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// `len` `units` of `message`'s work, as standard error can show it.
    pub fn new(message: String, len: u64, units: Units) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(message, len, units)
        } else {
            Self::lines(message, len, units, LINE_INTERVAL, |line| {
                eprintln!("{line}")
            })
        }
    }

    fn bar(message: String, len: u64, units: Units) -> Self {
        let bar = ProgressBar::new(len);
        let counts = match units {
            Units::Count(name) => format!("{{pos}}/{{len}} {name} {{per_sec}}"),
            Units::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}".into(),
        };
        let template = format!("{{msg}} {{bar:30}} {counts} eta {{eta}}");
        bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
        bar.set_message(message);
        Self { bar, lines: None }
    }

    /// A hidden bar, its state handed to `write` by a thread every `interval`.
    fn lines(
        message: String,
        len: u64,
        units: Units,
        interval: Duration,
        mut write: impl FnMut(String) + Send + 'static,
    ) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = bar.clone();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                write(line(&message, &watched, units));
            }
        });
        Self {
            bar,
            lines: Some((stop, thread)),
        }
    }

    /// Starts from `done` units (a resumed download).
    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some((stop, thread)) = self.lines.take() {
            drop(stop);
            // The thread only prints; a panic there has nothing to hand back.
            let _ = thread.join();
        }
    }
}

/// `MESSAGE: DONE/TOTAL UNITS, RATE UNITS/s, eta TIME`.
fn line(message: &str, bar: &ProgressBar, units: Units) -> String {
    let (done, total, rate) = (bar.position(), bar.length().unwrap_or(0), bar.per_sec());
    let eta = match rate > 0.0 && done <= total {
        true => HumanDuration(Duration::from_secs_f64((total - done) as f64 / rate)).to_string(),
        false => "unknown".into(),
    };
    let counts = match units {
        Units::Count(name) => format!("{done}/{total} {name}, {rate:.1} {name}/s"),
        Units::Bytes => format!(
            "{}/{}, {}/s",
            HumanBytes(done),
            HumanBytes(total),
            HumanBytes(rate as u64)
        ),
    };
    format!("{message}: {counts}, eta {eta}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_done_total_rate_and_time_left() {
        let bar = ProgressBar::with_draw_target(Some(300), ProgressDrawTarget::hidden());
        bar.set_position(100);
        let text = line("extract train", &bar, Units::Count("images"));
        assert!(
            text.starts_with("extract train: 100/300 images, "),
            "{text}"
        );
        assert!(text.contains(" images/s, eta "), "{text}");
        let text = line("rps.zip", &bar, Units::Bytes);
        assert!(text.starts_with("rps.zip: 100 B/300 B, "), "{text}");
    }

    #[test]
    fn lines_come_while_the_work_runs_and_stop_when_it_ends() {
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = written.clone();
        let progress = Progress::lines(
            "work".into(),
            10,
            Units::Count("steps"),
            Duration::from_millis(20),
            move |line| sink.lock().unwrap().push(line),
        );
        progress.inc(4);
        // However loaded the machine, lines come: wait for one after the increment.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !written
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("work: 4/10 steps, "))
        {
            assert!(std::time::Instant::now() < deadline, "no line in 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(progress);
        // Ending joined the thread: the writer it owned is gone, so no line can follow.
        assert_eq!(
            std::sync::Arc::strong_count(&written),
            1,
            "the writer outlived the work"
        );
    }
}
