//! The sample events `hookgate send` signs and posts.

use crate::payload::EventKind;

/// `--event ping`: an event hookgate does not know, as the provider's test ping.
pub(crate) const PING: &str = "ping";

/// A sample body for `event` (one of the four, or `ping`), timestamped now.
pub fn sample_event(event: &str) -> Result<Vec<u8>, String> {
    // To the microsecond: two samples are two events, not duplicates.
    let t = time::OffsetDateTime::now_utc();
    let now = t
        .replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot timestamp the sample event: {e}"))?;
    let doc = if event == PING {
        serde_json::json!({ "event": PING, "timestamp": now })
    } else {
        let kind = EventKind::from_name(event)
            .ok_or_else(|| format!("there is no sample {event:?} event"))?;
        let mut doc = serde_json::json!({
            "event": kind,
            "campaign_id": "camp_hookgate_sample",
            "campaign_name": "hookgate send sample",
            "timestamp": now,
            "page_url": "https://example.com/landing",
        });
        if kind == EventKind::Converted {
            doc["visitor"] = serde_json::json!({
                "email": "visitor@example.com",
                "fields": { "name": "Sample Visitor", "newsletter": true }
            });
        }
        doc
    };
    serde_json::to_vec(&doc).map_err(|e| format!("cannot write the sample event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Validated, validate};

    #[test]
    fn every_sample_event_is_valid() {
        for kind in EventKind::ALL {
            let body = sample_event(kind.as_str()).unwrap();
            match validate(&body) {
                Ok(Validated::Known(e)) => assert_eq!(e.kind, kind),
                other => panic!("{kind}: {other:?}"),
            }
        }
        let ping = sample_event(PING).unwrap();
        assert!(matches!(validate(&ping), Ok(Validated::Unknown(_))));
    }

    #[test]
    fn there_is_no_sample_of_an_unknown_event() {
        assert_eq!(
            sample_event("popup.hovered").unwrap_err(),
            r#"there is no sample "popup.hovered" event"#
        );
    }
}
