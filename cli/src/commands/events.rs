//! `kiln events`: the audit trail (operator writes and refused credentials,
//! see docs/security.md), oldest first; `-f` keeps following as new events
//! are stored.

use std::time::SystemTime;

use futures_util::StreamExt;
use kiln_proto::v1::{Event, EventsRequest};
use serde_json::json;

use crate::connection::{Client, status};
use crate::output::{Format, structured, table};
use crate::view;

/// Which events `kiln events` asks for.
pub struct Query {
    pub follow: bool,
    /// `DURATION` (ago, e.g. `1h`) or `TIME` (RFC 3339, e.g.
    /// `2026-01-31T12:00:00Z`).
    pub since: Option<String>,
    /// `write` or `security`.
    pub kind: Option<String>,
    pub limit: u32,
}

pub async fn run(c: &mut Client, q: Query, output: Format) -> anyhow::Result<()> {
    let since = q.since.as_deref().map(|s| parse_since(s, SystemTime::now())).transpose()?;
    let req = EventsRequest {
        since: since.map(kiln_proto::time::to_proto),
        kind: q.kind.unwrap_or_default(),
        limit: q.limit,
    };
    if !q.follow {
        let items = c.list_events(req).await.map_err(status)?.into_inner().items;
        let values: Vec<serde_json::Value> = items.iter().map(value).collect();
        if !structured(output, &values)? {
            let rows: Vec<Vec<String>> = items.iter().map(row).collect();
            print!("{}", table(&HEADER, &rows));
        }
        return Ok(());
    }
    let mut stream = c.watch_events(req).await.map_err(status)?.into_inner();
    if output == Format::Table {
        println!("{}", HEADER.join("   "));
    }
    while let Some(event) = stream.next().await {
        let event = event.map_err(status)?;
        // One line (or YAML document) per event, printed as it arrives.
        match output {
            Format::Json => println!("{}", value(&event)),
            Format::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&value(&event))?),
            Format::Table => println!("{}", row(&event).join("   ")),
        }
    }
    Ok(())
}

const HEADER: [&str; 6] = ["TIME", "KIND", "ACTOR", "ACTION", "OBJECT", "OUTCOME"];

fn row(e: &Event) -> Vec<String> {
    let mut outcome = e.outcome.clone();
    if !e.reason.is_empty() {
        outcome.push_str(&format!(": {}", e.reason));
    }
    if e.count > 1 {
        outcome.push_str(&format!(" (x{})", e.count));
    }
    let actor = if e.peer.is_empty() { e.actor.clone() } else { format!("{} from {}", e.actor, e.peer) };
    vec![
        view::time(&e.time).unwrap_or_default(),
        e.kind.clone(),
        actor,
        e.action.clone(),
        if e.object.is_empty() { "-".into() } else { e.object.clone() },
        outcome,
    ]
}

fn value(e: &Event) -> serde_json::Value {
    json!({
        "cursor": e.cursor, "time": view::time(&e.time), "kind": e.kind, "actor": e.actor, "peer": e.peer,
        "action": e.action, "object": e.object, "outcome": e.outcome, "reason": e.reason, "count": e.count,
    })
}

/// `--since`: a duration ago (`90s`, `1h`, `2d`) or a moment (RFC 3339).
pub fn parse_since(s: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow::anyhow!("--since {s:?}: expected a duration (e.g. 1h, 30m, 2d) or a time (e.g. 2026-01-31T12:00:00Z)")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_is_a_duration_ago_or_a_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_since("1h", now).unwrap(), now - Duration::from_secs(3600));
        assert_eq!(parse_since("90s", now).unwrap(), now - Duration::from_secs(90));
        assert_eq!(
            parse_since("1970-01-02T00:00:00Z", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)
        );
        let e = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("--since") && e.contains("duration"), "{e}");
    }

    #[test]
    fn rows_show_the_reason_the_count_and_the_peer() {
        let e = Event {
            actor: "agent m1".into(),
            peer: "192.0.2.1:4000".into(),
            action: "authenticate".into(),
            object: "agent service".into(),
            outcome: "refused".into(),
            reason: "wrong token".into(),
            count: 3,
            kind: "security".into(),
            ..Default::default()
        };
        let r = row(&e);
        assert_eq!(r[2], "agent m1 from 192.0.2.1:4000");
        assert_eq!(r[5], "refused: wrong token (x3)");
        assert_eq!(value(&e)["reason"], "wrong token");
    }
}
