//! Getting one file: from a local folder (`--from`), a `file://` URL, or HTTP(S)
//! with resume (Range requests on `NAME.part`) and bounded retries with backoff.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rps_core::progress::{Progress, Units};

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// Doubled after each failed attempt.
    pub first_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(500),
        }
    }
}

/// The file name a URL's last path segment gives.
pub fn file_name(url: &str) -> Result<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != ".." && name != "." => Ok(name.to_string()),
        _ => bail!("cannot tell a file name from the URL {url}"),
    }
}

/// Puts `url`'s content at `dest`: copied from `from/<name>` when a local folder is
/// given, else fetched. `dest` appears only when complete.
pub fn fetch(url: &str, from: Option<&Path>, dest: &Path, retry: Retry) -> Result<()> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(dir) = from {
        let source = dir.join(file_name(url)?);
        return copy_local(&source, dest);
    }
    if let Some(path) = url.strip_prefix("file://") {
        return copy_local(Path::new(path), dest);
    }
    download(url, dest, retry)
}

fn copy_local(source: &Path, dest: &Path) -> Result<()> {
    let mut input = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    rps_core::atomic::write_file(dest, |out| {
        io::copy(&mut input, out)
            .map_err(|e| anyhow::anyhow!("copying {}: {e}", source.display()))?;
        Ok(())
    })
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt (connection lost, timeout, 5xx, 429).
    Transient(String),
    Permanent(anyhow::Error),
}

fn download(url: &str, dest: &Path, retry: Retry) -> Result<()> {
    let part = part_path(dest);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into();
    let mut delay = retry.first_delay;
    let mut last = String::new();
    for attempt in 1..=retry.attempts {
        match attempt_download(&agent, url, &part) {
            Ok(()) => {
                fs::rename(&part, dest)
                    .with_context(|| format!("renaming {} into place", part.display()))?;
                return Ok(());
            }
            Err(Failure::Permanent(e)) => return Err(e),
            Err(Failure::Transient(why)) => {
                eprintln!(
                    "fetch: {url}: attempt {attempt}/{} failed: {why}",
                    retry.attempts
                );
                last = why;
                if attempt < retry.attempts {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }
    bail!(
        "giving up on {url} after {} attempts: {last}",
        retry.attempts
    )
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn attempt_download(agent: &ureq::Agent, url: &str, part: &Path) -> Result<(), Failure> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| classify(url, e))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let range = header("content-range").and_then(|v| ContentRange::parse(&v));
    let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let (offset, total) = match status {
        200 => (0, length),
        // Only a range that starts where the part ends continues it.
        206 => match range {
            Some(ContentRange::Part { start, total }) if start == have => {
                (have, total.or(length.map(|l| l + have)))
            }
            _ => return start_over(part, format!("HTTP 206 not resuming at byte {have}")),
        },
        // The part may already hold everything: the server says how much there is.
        416 if have > 0 => match range {
            Some(ContentRange::Unsatisfied { total }) if total == have => return Ok(()),
            _ => return start_over(part, format!("HTTP 416 to a resume at byte {have}")),
        },
        408 | 429 | 500..=599 => return Err(Failure::Transient(format!("HTTP {status}"))),
        _ => return Err(Failure::Permanent(anyhow::anyhow!("{url}: HTTP {status}"))),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(offset > 0)
        .truncate(offset == 0)
        .open(part)
        .map_err(|e| Failure::Permanent(anyhow::anyhow!("opening {}: {e}", part.display())))?;
    let progress = progress(url, total, offset);
    let mut reader = response.body_mut().as_reader();
    let written = copy_with_progress(&mut reader, &mut file, &progress)
        .map_err(|e| Failure::Transient(e.to_string()));
    drop(progress);
    let got = offset + written?;
    match total {
        Some(total) if got < total => Err(Failure::Transient(format!(
            "connection closed after {got} of {total} bytes"
        ))),
        Some(total) if got > total => {
            start_over(part, format!("{got} bytes where {total} were announced"))
        }
        _ => {
            eprintln!("fetch: {url}: {got} bytes");
            Ok(())
        }
    }
}

/// A host that does not resolve means no network (or a wrong URL): retrying will not
/// help, but running offline will. Anything else may pass.
fn classify(url: &str, error: ureq::Error) -> Failure {
    let unresolved = matches!(error, ureq::Error::HostNotFound)
        || error.to_string().contains("failed to lookup address");
    if !unresolved {
        return Failure::Transient(error.to_string());
    }
    Failure::Permanent(anyhow::anyhow!(
        "{url}: its host does not resolve ({error}): no network, or a mistyped URL. \
         To run offline, give the files a local folder (`make all FROM=DIR`, DIR holding \
         rps.zip and rps-test-set.zip) and the weights a file or random init \
         (`WEIGHTS=path/to/weights.pth` or `WEIGHTS=random`); the README's \
         \"Two commands\" section shows how"
    ))
}

/// A failed attempt whose part cannot be continued: removed, so the next attempt
/// downloads from the start.
fn start_over(part: &Path, why: String) -> Result<(), Failure> {
    match fs::remove_file(part) {
        Ok(()) => Err(Failure::Transient(format!("{why}; starting over"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::Transient(why)),
        Err(e) => Err(Failure::Permanent(anyhow::anyhow!(
            "removing {}: {e}",
            part.display()
        ))),
    }
}

/// A `Content-Range` header.
#[derive(Debug, PartialEq)]
enum ContentRange {
    /// `bytes START-END/TOTAL` (TOTAL may be `*`).
    Part { start: u64, total: Option<u64> },
    /// `bytes */TOTAL`, with a 416.
    Unsatisfied { total: u64 },
}

impl ContentRange {
    fn parse(value: &str) -> Option<Self> {
        let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
        if range == "*" {
            return Some(Self::Unsatisfied {
                total: total.parse().ok()?,
            });
        }
        let (start, _end) = range.split_once('-')?;
        Some(Self::Part {
            start: start.parse().ok()?,
            total: total.parse().ok(),
        })
    }
}

fn copy_with_progress(
    reader: &mut impl Read,
    file: &mut File,
    progress: &Progress,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut written = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            file.flush()?;
            return Ok(written);
        }
        file.write_all(&buf[..n])?;
        written += n as u64;
        progress.inc(n as u64);
    }
}

/// Bytes, speed and time left, from `done` bytes on.
fn progress(url: &str, total: Option<u64>, done: u64) -> Progress {
    eprintln!("fetch: downloading {url}");
    let name = file_name(url).unwrap_or_default().to_string();
    let progress = Progress::new(name, total.unwrap_or(0), Units::Bytes);
    progress.set_position(done);
    progress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_segment() {
        assert_eq!(
            file_name("https://x.org/models/resnet18-f37072fd.pth").unwrap(),
            "resnet18-f37072fd.pth"
        );
        assert_eq!(file_name("http://h/rps.zip?sig=1").unwrap(), "rps.zip");
        assert!(file_name("http://h/dir/").is_err());
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/200"),
            Some(ContentRange::Part {
                start: 100,
                total: Some(200)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*"),
            Some(ContentRange::Part {
                start: 5,
                total: None
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */200"),
            Some(ContentRange::Unsatisfied { total: 200 })
        );
        assert_eq!(ContentRange::parse("items 1-2/3"), None);
    }
}
