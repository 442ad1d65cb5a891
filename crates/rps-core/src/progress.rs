//! The progress bar every long stage shows (on a terminal; hidden otherwise).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` `units` (images, steps) with rate and time left.
pub fn bar(message: String, len: usize, units: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let template = format!("{{msg}} {{bar:30}} {{pos}}/{{len}} {units} {{per_sec}} eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar.set_message(message);
    bar
}
