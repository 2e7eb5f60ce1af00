//! Playing an SSH command's terminal recording (asciicast v2) inside
//! `portcullis replay`.
//!
//! By default what the server printed is made safe first: control
//! sequences are shown escaped, so a recorded session cannot retitle the
//! auditor's window, write to their clipboard (OSC 52) or hide lines.
//! `--raw` writes the bytes as the client's terminal got them, as a
//! terminal player would; use it only for recordings you trust.

use std::io::Write;
use std::time::Duration;

use crate::client::terminal_safe;

/// Longest pause played, however long the session sat idle.
const IDLE_LIMIT: f64 = 2.0;

/// How a recording is played.
#[derive(Debug, Clone, Copy)]
pub struct Playback {
    /// Seconds of recording per second played; `None`: all at once.
    pub speed: Option<f64>,
    /// Write the server's bytes unescaped.
    pub raw: bool,
}

/// Plays `cast` to `out`.
pub async fn play(out: &mut impl Write, cast: &str, how: Playback) -> anyhow::Result<()> {
    let mut lines = cast.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or_default()).unwrap_or_default();
    writeln!(
        out,
        "    ── recording {}x{} ──",
        header["width"].as_u64().unwrap_or(0),
        header["height"].as_u64().unwrap_or(0)
    )?;
    if !how.raw {
        write!(out, "    │ ")?;
    }
    let mut last = 0.0f64;
    for line in lines {
        let Ok((at, code, text)) = serde_json::from_str::<(f64, String, String)>(line) else {
            writeln!(out, "    (an unreadable event in the recording)")?;
            continue;
        };
        if let Some(speed) = how.speed {
            let gap = ((at - last) / speed).clamp(0.0, IDLE_LIMIT);
            out.flush()?;
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
        last = at;
        match code.as_str() {
            "o" | "e" if how.raw => write!(out, "{text}")?,
            "o" | "e" => {
                // Every recorded line is marked, so what a server printed
                // cannot pass for replay's own lines.
                let safe = terminal_safe(&text.replace("\r\n", "\n")).replace('\n', "\n    │ ");
                write!(out, "{safe}")?
            }
            "r" => writeln!(out, "\n    ── resized to {} ──", terminal_safe(&text))?,
            // What the client sent (recorded for shells without a
            // terminal, where nothing echoes it, and with record_input).
            "i" if !how.raw => {
                let typed = terminal_safe(&text.replace('\r', "\n")).replace('\n', "\n    ⌨ ");
                write!(out, "\n    ⌨ {typed}\n    │ ")?
            }
            _ => {}
        }
    }
    writeln!(out, "\n    ── end of recording ──")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn escapes_the_servers_control_sequences_unless_raw() {
        let cast = concat!(
            "{\"version\":2,\"width\":80,\"height\":24}\n",
            "[0.1,\"o\",\"hello\\r\\n\"]\n",
            "[0.2,\"o\",\"\\u001b]52;c;ZXZpbA==\\u0007\"]\n",
            "[0.3,\"r\",\"100x40\"]\n",
            "[0.4,\"i\",\"touch x\\n\"]\n",
        );
        let mut safe = Vec::new();
        play(
            &mut safe,
            cast,
            Playback {
                speed: None,
                raw: false,
            },
        )
        .await
        .unwrap();
        let safe = String::from_utf8(safe).unwrap();
        assert!(safe.contains("    │ hello\n    │ "), "{safe:?}");
        assert!(!safe.contains('\u{1b}'), "{safe:?}");
        assert!(safe.contains("resized to 100x40"));
        assert!(safe.contains("    ⌨ touch x"), "{safe:?}");
        let mut raw = Vec::new();
        play(
            &mut raw,
            cast,
            Playback {
                speed: None,
                raw: true,
            },
        )
        .await
        .unwrap();
        assert!(String::from_utf8(raw).unwrap().contains("\u{1b}]52"));
    }
}
