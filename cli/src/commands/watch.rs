//! `kiln watch`: follows a workflow until it ends.
//!
//! On a terminal the action table is redrawn in place, with running
//! actions' elapsed time ticking; elsewhere (pipes, CI logs) one line is
//! printed per change, so the output is a readable record.
//!
//! Actions that print progress lines (`{"progress":{"done":..,"total":..}}`,
//! see docs/action-contract.md) get a bar of their own: the workflow's
//! logs are followed next to its state.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kiln_proto::v1::{GetRequest, LogEntry, LogsRequest, Workflow};
use serde::Deserialize;

use crate::connection::{Client, status};
use crate::output::{clock, elapsed};
use crate::view::{action_state, is_terminal, workflow_state};

const TICK: Duration = Duration::from_millis(200);
const BAR_WIDTH: usize = 30;

/// The latest progress line of one action.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    #[serde(default)]
    pub rate: u64,
}

#[derive(Deserialize)]
struct ProgressLine {
    progress: Progress,
}

/// The progress in a log line, if it is one.
pub fn parse_progress(text: &str) -> Option<Progress> {
    if !text.starts_with("{\"progress\"") {
        return None;
    }
    serde_json::from_str::<ProgressLine>(text).ok().map(|l| l.progress)
}

/// Follows `workflow` (and its logs, for progress bars): exits 0 on SUCCESS,
/// 1 otherwise.
pub async fn run(c: &mut Client, workflow: String) -> anyhow::Result<ExitCode> {
    let stream = c.watch_workflow(GetRequest { name: workflow.clone() }).await.map_err(status)?.into_inner();
    let logs_req = LogsRequest { workflow_id: workflow, action: String::new(), follow: true };
    let logs = c.clone().logs(logs_req).await.ok().map(|r| r.into_inner());
    let last = watch(stream, logs).await?;
    if last.is_none_or(|w| workflow_state(w.state) != "SUCCESS") {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watch(
    mut stream: tonic::Streaming<Workflow>,
    mut logs: Option<tonic::Streaming<LogEntry>>,
) -> anyhow::Result<Option<Workflow>> {
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<Workflow> = None;
    let mut seen: HashMap<(u32, u32), &'static str> = HashMap::new();
    let mut progress: HashMap<u32, Progress> = HashMap::new();
    // Plain mode: the quarter last printed per action.
    let mut quarters: HashMap<u32, u64> = HashMap::new();
    let mut drawn = 0;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(wf) => {
                    let wf = wf?;
                    if tty {
                        drawn = redraw(&wf, &progress, drawn);
                    } else {
                        print!("{}", changes(&wf, &mut seen));
                    }
                    last = Some(wf);
                }
                None => break,
            },
            entry = async { logs.as_mut()?.next().await }, if logs.is_some() => match entry {
                Some(Ok(e)) => {
                    if let Some(p) = e.line.as_ref().and_then(|l| parse_progress(&l.text)) {
                        if !tty && let Some(line) = progress_change(&e, &p, &mut quarters) {
                            println!("{line}");
                        }
                        progress.insert(e.action_index, p);
                    }
                }
                // The bar is a nicety: without logs, watch goes on.
                _ => logs = None,
            },
            _ = tick.tick(), if tty => if let Some(wf) = &last {
                drawn = redraw(wf, &progress, drawn);
            },
        }
    }
    // The last progress lines may trail the final state by a moment: the
    // logs stream ends on its own once the workflow has ended.
    if let Some(mut logs) = logs.filter(|_| !tty) {
        let drain = async {
            while let Some(Ok(e)) = logs.next().await {
                if let Some(p) = e.line.as_ref().and_then(|l| parse_progress(&l.text))
                    && let Some(line) = progress_change(&e, &p, &mut quarters)
                {
                    println!("{line}");
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    if let Some(wf) = &last {
        if !tty {
            print!("{}", changes(wf, &mut seen));
        }
        println!("{}", summary(wf));
    }
    Ok(last)
}

/// Lines for the actions whose (attempt, state) was not printed yet.
fn changes(wf: &Workflow, seen: &mut HashMap<(u32, u32), &'static str>) -> String {
    let mut out = String::new();
    let total = wf.actions.len();
    for a in &wf.actions {
        let spec = a.spec.clone().unwrap_or_default();
        for t in &a.attempts {
            let state = action_state(t.state);
            if seen.insert((a.index, t.number), state) == Some(state) {
                continue;
            }
            let mut line = format!(
                "{} action {}/{} {}/{} {state}",
                clock(SystemTime::now()),
                a.index + 1,
                total,
                spec.task,
                spec.name
            );
            if t.number > 1 {
                line.push_str(&format!(" (attempt {})", t.number));
            }
            if let Some(d) = crate::output::between(&t.running_at, &t.finished_at) {
                line.push_str(&format!(" after {}", elapsed(d)));
            }
            if let Some(code) = t.exit_code.filter(|c| *c != 0) {
                line.push_str(&format!(" exit code {code}"));
            }
            if !t.reason.is_empty() {
                line.push_str(&format!(" {}", t.reason));
            }
            if !t.message.is_empty() && state != "SUCCESS" {
                line.push_str(&format!(": {}", t.message));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

pub fn summary(wf: &Workflow) -> String {
    let state = workflow_state(wf.state);
    let took = crate::output::between(&wf.started_at, &wf.finished_at).map(elapsed);
    match (state, took) {
        ("SUCCESS", Some(t)) => format!("workflow {} SUCCESS in {t}", wf.id),
        (s, _) if is_terminal(wf.state) => format!("workflow {} {s}: {}", wf.id, wf.reason),
        (s, _) => format!("workflow {} {s} (watch ended)", wf.id),
    }
}

/// Plain mode prints an action's progress each time it passes a quarter.
fn progress_change(e: &LogEntry, p: &Progress, printed: &mut HashMap<u32, u64>) -> Option<String> {
    let total = p.total.filter(|t| *t > 0)?;
    let quarter = p.done.min(total) * 4 / total;
    if printed.insert(e.action_index, quarter) == Some(quarter) {
        return None;
    }
    Some(format!(
        "{} action {} {} {}%: {}",
        clock(SystemTime::now()),
        e.action_index + 1,
        e.action_name,
        quarter * 25,
        progress_text(p)
    ))
}

/// `1.2 GiB / 2.9 GiB, 150.0 MiB/s`
pub fn progress_text(p: &Progress) -> String {
    let total = p.total.map(|t| format!(" / {}", bytes(t))).unwrap_or_default();
    format!("{}{total}, {}/s", bytes(p.done), bytes(p.rate))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64) as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The in-place view: a progress bar and one row per action, with a bar of
/// its own for a running action that reports progress.
pub fn render(wf: &Workflow, progress: &HashMap<u32, Progress>, now: SystemTime) -> Vec<String> {
    let done = wf.actions.iter().filter(|a| action_state(a.state) == "SUCCESS").count();
    let total = wf.actions.len().max(1);
    let mut lines = vec![format!(
        "{} {}  {} {done}/{}",
        wf.id,
        workflow_state(wf.state),
        bar(done as f64 / total as f64, BAR_WIDTH),
        wf.actions.len()
    )];
    for a in &wf.actions {
        let spec = a.spec.clone().unwrap_or_default();
        let took = a.attempts.last().and_then(|t| {
            let start = t.running_at.as_ref().or(t.pulling_at.as_ref()).or(t.created_at.as_ref())?;
            let end = t.finished_at.as_ref().map_or(now, kiln_proto::time::from_proto);
            end.duration_since(kiln_proto::time::from_proto(start)).ok()
        });
        let mut line = format!(
            "  {:>2}. {:<32} {:<8} {}",
            a.index + 1,
            format!("{}/{}", spec.task, spec.name),
            action_state(a.state),
            took.map(elapsed).unwrap_or_default()
        );
        if action_state(a.state) == "RUNNING"
            && let Some(p) = progress.get(&a.index)
        {
            let fraction = p.total.filter(|t| *t > 0).map(|t| p.done as f64 / t as f64);
            if let Some(f) = fraction {
                line.push_str(&format!("  {} {:>3.0}%", bar(f, 20), f * 100.0));
            }
            line.push_str(&format!("  {}", progress_text(p)));
        }
        lines.push(line);
    }
    lines
}

fn redraw(wf: &Workflow, progress: &HashMap<u32, Progress>, previous: usize) -> usize {
    let lines = render(wf, progress, SystemTime::now());
    let mut out = String::new();
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}A"));
    }
    for l in &lines {
        out.push_str("\x1b[2K");
        out.push_str(l);
        out.push('\n');
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    lines.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::v1::{ActionSpec, ActionState, ActionStatus, Attempt, WorkflowState};

    fn wf(states: &[ActionState]) -> Workflow {
        Workflow {
            id: "wf1".into(),
            state: WorkflowState::Running as i32,
            actions: states
                .iter()
                .enumerate()
                .map(|(i, s)| ActionStatus {
                    index: i as u32,
                    spec: Some(ActionSpec { task: "t".into(), name: format!("a{i}"), ..Default::default() }),
                    state: *s as i32,
                    attempts: if *s == ActionState::Pending {
                        vec![]
                    } else {
                        vec![Attempt { number: 1, state: *s as i32, ..Default::default() }]
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn plain_mode_prints_each_change_once() {
        let mut seen = HashMap::new();
        let first = changes(&wf(&[ActionState::Running, ActionState::Pending]), &mut seen);
        assert!(first.contains("action 1/2 t/a0 RUNNING"), "{first}");
        assert_eq!(first.lines().count(), 1);
        assert_eq!(changes(&wf(&[ActionState::Running, ActionState::Pending]), &mut seen), "");
        let next = changes(&wf(&[ActionState::Success, ActionState::Running]), &mut seen);
        assert_eq!(next.lines().count(), 2, "{next}");
    }

    #[test]
    fn terminal_view_has_a_progress_bar() {
        let progress = HashMap::from([(1, Progress { done: 3 << 30, total: Some(4 << 30), rate: 150 << 20 })]);
        let w = wf(&[ActionState::Success, ActionState::Running, ActionState::Pending]);
        let lines = render(&w, &progress, SystemTime::now());
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains(&format!("[{}{}] 1/3", "#".repeat(10), "-".repeat(20))), "{}", lines[0]);
        assert!(lines[2].contains("t/a1") && lines[2].contains("RUNNING"));
        assert!(
            lines[2].contains(&format!("[{}{}]  75%  3.0 GiB / 4.0 GiB, 150.0 MiB/s", "#".repeat(15), "-".repeat(5))),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn progress_lines_are_recognised_and_printed_per_quarter() {
        let p = parse_progress(r#"{"progress":{"what":"image","done":600,"total":1000,"percent":60.0,"rate":10}}"#);
        assert_eq!(p, Some(Progress { done: 600, total: Some(1000), rate: 10 }));
        assert_eq!(parse_progress("plain text"), None);
        assert_eq!(parse_progress(r#"{"progress":"half"}"#), None);
        let e = LogEntry { action_index: 0, action_name: "image2disk".into(), ..Default::default() };
        let mut printed = HashMap::new();
        let half = progress_change(&e, &p.clone().unwrap(), &mut printed).unwrap();
        assert!(half.contains("action 1 image2disk 50%"), "{half}");
        assert_eq!(progress_change(&e, &p.unwrap(), &mut printed), None, "same quarter printed once");
    }
}
