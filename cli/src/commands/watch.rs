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
use kiln_proto::v1::{BmcJob, GetRequest, LogEntry, LogsRequest, Workflow};
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
    let mut seen_steps: HashMap<String, String> = HashMap::new();
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
                        print!("{}", step_changes(&wf, &mut seen_steps));
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
            print!("{}", step_changes(wf, &mut seen_steps));
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

/// BMC steps with the name each shows (`start`, `start (earlier run)`).
type Steps<'a> = Vec<(String, &'a BmcJob)>;

/// A workflow's BMC steps (docs/bmc.md), split into those that run before
/// its first action (`start`) and those after its SUCCESS (`finish`).
fn bmc_steps(wf: &Workflow) -> (Steps<'_>, Steps<'_>) {
    let prefix = format!("workflow/{}/", wf.id);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for job in &wf.bmc_steps {
        let step = job.key.strip_prefix(&prefix).unwrap_or(&job.key);
        let (name, earlier) = match step.split_once('/') {
            Some((name, _)) => (name, true),
            None => (step, false),
        };
        let label = if earlier { format!("{name} (earlier run)") } else { name.to_string() };
        if name == "finish" { after.push((label, job)) } else { before.push((label, job)) }
    }
    (before, after)
}

/// How long a BMC step took (ended) or has taken so far.
fn step_took(job: &BmcJob, now: SystemTime) -> Option<Duration> {
    let start = kiln_proto::time::from_proto(job.created_at.as_ref()?);
    let end = match job.state.as_str() {
        "succeeded" | "failed" => kiln_proto::time::from_proto(job.updated_at.as_ref()?),
        _ => now,
    };
    end.duration_since(start).ok()
}

/// Plain mode: a line for each BMC step whose state was not printed yet.
fn step_changes(wf: &Workflow, seen: &mut HashMap<String, String>) -> String {
    let (before, after) = bmc_steps(wf);
    let mut out = String::new();
    for (label, job) in before.into_iter().chain(after) {
        if seen.insert(job.id.clone(), job.state.clone()).as_deref() == Some(job.state.as_str()) {
            continue;
        }
        let mut line =
            format!("{} bmc {label} ({}) {}", clock(SystemTime::now()), job.operation, job.state.to_uppercase());
        if job.attempts > 1 {
            line.push_str(&format!(" (attempt {})", job.attempts));
        }
        let ended = job.state == "succeeded" || job.state == "failed";
        if ended && let Some(d) = step_took(job, SystemTime::now()) {
            line.push_str(&format!(" after {}", elapsed(d)));
        }
        let outcome = if job.state == "succeeded" { &job.result } else { &job.error };
        if !outcome.is_empty() {
            line.push_str(&format!(": {outcome}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn step_row(label: &str, job: &BmcJob, now: SystemTime) -> String {
    let mut line = format!(
        "  bmc {:<32} {:<8} {}",
        format!("{label}: {}", job.operation),
        job.state.to_uppercase(),
        step_took(job, now).map(elapsed).unwrap_or_default()
    );
    let outcome = if job.state == "succeeded" { &job.result } else { &job.error };
    if !outcome.is_empty() {
        line.push_str(&format!("  {outcome}"));
    }
    line
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
    let (before, after) = bmc_steps(wf);
    lines.extend(before.iter().map(|(label, job)| step_row(label, job, now)));
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
    lines.extend(after.iter().map(|(label, job)| step_row(label, job, now)));
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

    fn job(id: &str, key: &str, state: &str, result: &str, error: &str) -> BmcJob {
        BmcJob {
            id: id.into(),
            key: key.into(),
            operation: "start pxe cycle".into(),
            state: state.into(),
            attempts: 1,
            result: result.into(),
            error: error.into(),
            created_at: Some(prost_types::Timestamp { seconds: 100, nanos: 0 }),
            updated_at: Some(prost_types::Timestamp { seconds: 102, nanos: 500_000_000 }),
            ..Default::default()
        }
    }

    #[test]
    fn bmc_steps_show_before_and_after_the_actions() {
        let mut w = wf(&[ActionState::Success]);
        w.bmc_steps = vec![
            job("j0", "workflow/wf1/start/failed-j0", "failed", "", "BMC 10.0.0.9: HTTP 500"),
            job("j1", "workflow/wf1/start", "succeeded", "on", ""),
            BmcJob { operation: "power off".into(), ..job("j2", "workflow/wf1/finish", "running", "", "") },
        ];
        let lines = render(&w, &HashMap::new(), SystemTime::UNIX_EPOCH + Duration::from_secs(110));
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[1].contains("bmc start (earlier run): start pxe cycle") && lines[1].contains("FAILED"));
        assert!(lines[1].contains("2.5s") && lines[1].contains("HTTP 500"), "{}", lines[1]);
        assert!(lines[2].contains("bmc start: start pxe cycle") && lines[2].contains("SUCCEEDED"), "{}", lines[2]);
        assert!(lines[3].contains("t/a0"), "actions between the steps: {}", lines[3]);
        assert!(lines[4].contains("bmc finish: power off") && lines[4].contains("RUNNING  10.0s"), "{}", lines[4]);

        let mut seen = HashMap::new();
        let plain = step_changes(&w, &mut seen);
        let plain: Vec<&str> = plain.lines().collect();
        assert_eq!(plain.len(), 3, "{plain:#?}");
        assert!(
            plain[0].ends_with("bmc start (earlier run) (start pxe cycle) FAILED after 2.5s: BMC 10.0.0.9: HTTP 500")
        );
        assert!(plain[1].ends_with("bmc start (start pxe cycle) SUCCEEDED after 2.5s: on"), "{}", plain[1]);
        assert!(plain[2].ends_with("bmc finish (power off) RUNNING"), "{}", plain[2]);
        assert_eq!(step_changes(&w, &mut seen), "", "each state printed once");
        w.bmc_steps[2].state = "succeeded".into();
        assert!(step_changes(&w, &mut seen).contains("bmc finish (power off) SUCCEEDED after 2.5s"));
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
