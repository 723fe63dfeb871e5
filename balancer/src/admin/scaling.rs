//! Scaling events: what an autoscaler decided, reported to the balancer so the dashboard
//! can show why the backend set grows or shrinks next to the traffic that caused it.
//!
//! `POST /api/scaling-events` (bearer token, like every API change) adds one;
//! `GET /api/scaling-events` and the dashboard's `GET /dashboard/scaling-events` (session
//! cookie accepted) list them, oldest first. The balancer does not act on them: they are a
//! record. Everything about them is bounded, since the body is a client's text: the ring
//! keeps the newest [`MAX_EVENTS`], a body is at most [`MAX_EVENT_BYTES`], and every field
//! is checked (known names only, strings short and printable, figures finite numbers and
//! few). The balancer stamps the time it received the event (its own clock, so the
//! dashboard's times agree with its chart) and a sequence number, so a reader can ask
//! only for what is newer (`?after=N`).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// Events kept; the oldest leaves when a new one comes.
pub const MAX_EVENTS: usize = 100;
/// The largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 2048;
/// The most named figures one event carries.
pub const MAX_FIGURES: usize = 16;
/// The longest `reason` and `source`.
const MAX_REASON_CHARS: usize = 200;
const MAX_SOURCE_CHARS: usize = 64;
const MAX_FIGURE_NAME_CHARS: usize = 40;
/// Instance counts an event may name (a sanity bound, not a policy).
const MAX_COUNT: u64 = 100_000;

/// Why an event was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// The ring of recent events.
#[derive(Debug, Default)]
pub struct ScalingEvents {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    events: VecDeque<Value>,
}

impl ScalingEvents {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Every change is one push or pop: a panic cannot leave the ring half-changed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates `body` and keeps it, stamped with `at_ms` (Unix milliseconds, the
    /// balancer's wall clock) and the
    /// next sequence number; returns the stored event.
    pub fn record(&self, body: &Map<String, Value>, at_ms: u64) -> Result<Value, Invalid> {
        let mut event = validate(body)?;
        let mut ring = self.ring();
        ring.next_seq += 1;
        event.insert("seq".into(), json!(ring.next_seq));
        event.insert("at_ms".into(), json!(at_ms));
        let event = Value::Object(event);
        if ring.events.len() == MAX_EVENTS {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        Ok(event)
    }

    /// The events with a sequence number above `after`, oldest first.
    pub fn list(&self, after: u64) -> Value {
        let ring = self.ring();
        let events: Vec<&Value> = ring
            .events
            .iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > after))
            .collect();
        json!({ "events": events, "last_seq": ring.next_seq, "capacity": MAX_EVENTS })
    }
}

/// The wall clock in Unix milliseconds (what a browser's `Date` reads).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `after` from a query string such as `after=12`; absent or unreadable is 0 (everything).
pub fn after_of(query: Option<&str>) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("after="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn text(
    body: &Map<String, Value>,
    field: &'static str,
    max: usize,
    required: bool,
) -> Result<Option<String>, Invalid> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= max && s.chars().all(|c| !c.is_control()) =>
        {
            Ok(Some(s.clone()))
        }
        _ => Err(invalid(
            field,
            format!("{field} must be a string of 1-{max} characters without control characters"),
        )),
    }
}

fn count(body: &Map<String, Value>, field: &'static str) -> Result<u64, Invalid> {
    body.get(field)
        .and_then(Value::as_u64)
        .filter(|n| *n <= MAX_COUNT)
        .ok_or_else(|| invalid(field, format!("{field} must be an integer 0-{MAX_COUNT}")))
}

fn validate(body: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    const KNOWN: [&str; 6] = [
        "source",
        "direction",
        "current",
        "desired",
        "reason",
        "figures",
    ];
    if let Some(name) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        // The name is the client's text: echoed only if it looks like a field name.
        let shown =
            if name.len() <= 40 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                name.as_str()
            } else {
                "(not shown)"
            };
        return Err(invalid(
            "body",
            format!("unknown field {shown} (expected {})", KNOWN.join(", ")),
        ));
    }
    let source = text(body, "source", MAX_SOURCE_CHARS, true)?.expect("required");
    let direction = match body.get("direction").and_then(Value::as_str) {
        Some(d @ ("up" | "down" | "none")) => d.to_owned(),
        _ => {
            return Err(invalid(
                "direction",
                "direction must be \"up\", \"down\" or \"none\"",
            ));
        }
    };
    let current = count(body, "current")?;
    let desired = count(body, "desired")?;
    let reason = text(body, "reason", MAX_REASON_CHARS, false)?;
    let mut figures = Map::new();
    match body.get("figures") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            if given.len() > MAX_FIGURES {
                return Err(invalid("figures", format!("at most {MAX_FIGURES} figures")));
            }
            for (name, value) in given {
                let name_ok = !name.is_empty()
                    && name.len() <= MAX_FIGURE_NAME_CHARS
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !name_ok {
                    return Err(invalid(
                        "figures",
                        format!("figure names are 1-{MAX_FIGURE_NAME_CHARS} letters, digits or _"),
                    ));
                }
                match value {
                    Value::Null => {}
                    Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                        figures.insert(name.clone(), value.clone());
                    }
                    _ => {
                        return Err(invalid("figures", "each figure is a finite number or null"));
                    }
                }
            }
        }
        Some(_) => return Err(invalid("figures", "figures must be an object of numbers")),
    }
    let mut event = Map::new();
    event.insert("source".into(), json!(source));
    event.insert("direction".into(), json!(direction));
    event.insert("current".into(), json!(current));
    event.insert("desired".into(), json!(desired));
    event.insert("reason".into(), json!(reason));
    event.insert("figures".into(), Value::Object(figures));
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn good() -> Value {
        json!({"source": "autoscaler", "direction": "up", "current": 1, "desired": 3,
               "reason": "ratio 2.4 over target", "figures": {"rps_per_instance": 120.5, "cpu": null}})
    }

    #[test]
    fn a_good_event_is_kept_with_its_time_and_number() {
        let events = ScalingEvents::default();
        let stored = events.record(&body(good()), 1234).unwrap();
        assert_eq!(stored["seq"], 1);
        assert_eq!(stored["at_ms"], 1234);
        assert_eq!(stored["figures"], json!({"rps_per_instance": 120.5}));
        let listed = events.list(0);
        assert_eq!(listed["events"].as_array().unwrap().len(), 1);
        assert_eq!(events.list(1)["events"], json!([]));
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let events = ScalingEvents::default();
        for i in 0..(MAX_EVENTS as u64 + 7) {
            events.record(&body(good()), i).unwrap();
        }
        let listed = events.list(0);
        let all = listed["events"].as_array().unwrap();
        assert_eq!(all.len(), MAX_EVENTS);
        assert_eq!(all[0]["seq"], 8);
        assert_eq!(all[MAX_EVENTS - 1]["seq"], MAX_EVENTS as u64 + 7);
    }

    #[test]
    fn bad_fields_are_named() {
        let events = ScalingEvents::default();
        let refuse = |patch: Value| {
            let mut b = body(good());
            for (k, v) in body(patch) {
                b.insert(k, v);
            }
            events.record(&b, 0).unwrap_err().field
        };
        assert_eq!(refuse(json!({"direction": "sideways"})), "direction");
        assert_eq!(refuse(json!({"current": -1})), "current");
        assert_eq!(refuse(json!({"desired": 1_000_000})), "desired");
        assert_eq!(refuse(json!({"source": ""})), "source");
        assert_eq!(refuse(json!({"reason": "a\u{7}b"})), "reason");
        assert_eq!(refuse(json!({"reason": "x".repeat(201)})), "reason");
        assert_eq!(refuse(json!({"figures": {"bad name": 1}})), "figures");
        assert_eq!(refuse(json!({"figures": {"a": "1"}})), "figures");
        let many: Map<String, Value> = (0..17).map(|i| (format!("f{i}"), json!(i))).collect();
        assert_eq!(refuse(json!({"figures": many})), "figures");
        assert_eq!(refuse(json!({"extra": 1})), "body");
        assert_eq!(
            events.list(0)["events"],
            json!([]),
            "nothing refused is kept"
        );
    }

    #[test]
    fn after_is_read_from_the_query() {
        assert_eq!(after_of(Some("after=12")), 12);
        assert_eq!(after_of(Some("x=1&after=3")), 3);
        assert_eq!(after_of(Some("after=nope")), 0);
        assert_eq!(after_of(None), 0);
    }
}
