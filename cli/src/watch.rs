//! `kiln watch`: follows a workflow until it ends.
//!
//! On a terminal the action table is redrawn in place, with running
//! actions' elapsed time ticking; elsewhere (pipes, CI logs) one line is
//! printed per change, so the output is a readable record.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kiln_proto::v1::Workflow;

use crate::output::{clock, elapsed};
use crate::view::{action_state, is_terminal, workflow_state};

const TICK: Duration = Duration::from_millis(200);
const BAR_WIDTH: usize = 30;

pub async fn watch(mut stream: tonic::Streaming<Workflow>) -> anyhow::Result<Option<Workflow>> {
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<Workflow> = None;
    let mut seen: HashMap<(u32, u32), &'static str> = HashMap::new();
    let mut drawn = 0;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(wf) => {
                    let wf = wf?;
                    if tty {
                        drawn = redraw(&wf, drawn);
                    } else {
                        print!("{}", changes(&wf, &mut seen));
                    }
                    last = Some(wf);
                }
                None => break,
            },
            _ = tick.tick(), if tty => if let Some(wf) = &last {
                drawn = redraw(wf, drawn);
            },
        }
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

/// The in-place view: a progress bar and one row per action.
pub fn render(wf: &Workflow, now: SystemTime) -> Vec<String> {
    let done = wf.actions.iter().filter(|a| action_state(a.state) == "SUCCESS").count();
    let total = wf.actions.len().max(1);
    let filled = done * BAR_WIDTH / total;
    let mut lines = vec![format!(
        "{} {}  [{}{}] {done}/{}",
        wf.id,
        workflow_state(wf.state),
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        wf.actions.len()
    )];
    for a in &wf.actions {
        let spec = a.spec.clone().unwrap_or_default();
        let took = a.attempts.last().and_then(|t| {
            let start = t.running_at.as_ref().or(t.pulling_at.as_ref()).or(t.created_at.as_ref())?;
            let end = t.finished_at.as_ref().map_or(now, kiln_proto::time::from_proto);
            end.duration_since(kiln_proto::time::from_proto(start)).ok()
        });
        lines.push(format!(
            "  {:>2}. {:<32} {:<8} {}",
            a.index + 1,
            format!("{}/{}", spec.task, spec.name),
            action_state(a.state),
            took.map(elapsed).unwrap_or_default()
        ));
    }
    lines
}

fn redraw(wf: &Workflow, previous: usize) -> usize {
    let lines = render(wf, SystemTime::now());
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
        let lines = render(&wf(&[ActionState::Success, ActionState::Running, ActionState::Pending]), SystemTime::now());
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains(&format!("[{}{}] 1/3", "#".repeat(10), "-".repeat(20))), "{}", lines[0]);
        assert!(lines[2].contains("t/a1") && lines[2].contains("RUNNING"));
    }
}
