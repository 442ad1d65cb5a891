//! A panic in code that is not ours (an image decoder's bug on a hostile file)
//! turned into an error: [`contained`] runs a closure and returns its panic's
//! message instead, and no panic hook prints it (the error is reported where the
//! stage reports errors). Panics anywhere else reach the hook as before.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread runs inside [`contained`].
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work`; a panic inside it becomes `Err` with the panic's message.
pub fn contained<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    quiet_hook();
    let outer = CONTAINING.replace(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    CONTAINING.set(outer);
    outcome.map_err(|payload| message(payload.as_ref()))
}

/// Wraps the panic hook in place (the default one, or a fuzzer's) so that it stays
/// silent for panics [`contained`] catches.
fn quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CONTAINING.get() {
                previous(info);
            }
        }));
    });
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_its_message_and_outside_work_is_untouched() {
        let slice: &[u8] = &[1];
        let err = contained(|| slice[0..3].len()).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        assert_eq!(contained(|| 7), Ok(7));
        assert!(!CONTAINING.get(), "the thread still counts as containing");
    }
}
