//! Workflow traces (OpenTelemetry, exported over OTLP with
//! `--otlp-endpoint`), rebuilt from the transitions the server commits.
//!
//! Ids are derived from the workflow and its attempts
//! ([`kiln_telemetry::WorkflowTrace`]), so the spans of one workflow form
//! one trace whichever replica committed each transition, and the agent
//! hangs its own spans under the attempt span its assignment names. Each
//! span is emitted once, when the transition that ends it commits:
//!
//! ```text
//! workflow ID                      created .. SUCCESS | FAILED | TIMEOUT
//! ├── apply                        the apply that created it
//! └── action NAME (per attempt)    dispatched .. ended, state and reason
//!     ├── dispatch                 due (predecessor ended) .. handed out
//!     ├── pull                     the agent reported PULLING .. RUNNING
//!     ├── run                      RUNNING .. ended
//!     └── (the agent's spans: pull, run, report, as it saw them)
//! ```

use std::borrow::Cow;
use std::time::SystemTime;

use kiln_telemetry::{Attribute, RecordedSpan, WorkflowTrace, millis_to_time};

use crate::metrics::{Before, due_at};
use crate::model::{ActionState, Millis, Workflow, WorkflowState};

/// Emits the spans a committed transition ended (nothing when trace export
/// is off).
pub fn transition(before: &Before, after: &Workflow) {
    let Some(recorder) = kiln_telemetry::recorder() else { return };
    for span in ended_spans(before, after) {
        recorder.emit(span);
    }
}

/// The `apply` span of a workflow that `apply` created: it ran from
/// `started` until now.
pub fn applied(workflow_id: &str, created_at: Millis, started: SystemTime) {
    let Some(recorder) = kiln_telemetry::recorder() else { return };
    let trace = WorkflowTrace::of(workflow_id, created_at);
    recorder.emit(RecordedSpan {
        name: "apply".into(),
        trace,
        span_id: WorkflowTrace::child_span(workflow_id, &format!("apply {created_at}")),
        parent: Some(trace.root),
        start: started,
        end: SystemTime::now(),
        attributes: vec![Attribute::new("kiln.workflow", workflow_id.to_string())],
        error: None,
    });
}

/// The `traceparent` an attempt's assignment carries: the attempt's span.
pub fn traceparent(wf: &Workflow, attempt_id: &str) -> String {
    WorkflowTrace::of(&wf.id, wf.created_at).traceparent(WorkflowTrace::attempt_span(attempt_id))
}

/// What `before` -> `after` ended: each ended attempt's spans, and the
/// workflow's when it ended.
fn ended_spans(before: &Before, after: &Workflow) -> Vec<RecordedSpan> {
    let trace = WorkflowTrace::of(&after.id, after.created_at);
    let mut spans: Vec<RecordedSpan> =
        before.ended_in(after).into_iter().flat_map(|(index, i)| attempt_spans(after, index, i, trace)).collect();
    if after.state != before.state() && after.state.is_terminal() {
        spans.push(workflow_span(after, trace));
    }
    spans
}

fn workflow_span(wf: &Workflow, trace: WorkflowTrace) -> RecordedSpan {
    RecordedSpan {
        name: format!("workflow {}", wf.id).into(),
        trace,
        span_id: trace.root,
        parent: None,
        start: millis_to_time(wf.created_at),
        end: millis_to_time(wf.finished_at.unwrap_or(wf.created_at)),
        attributes: vec![
            Attribute::new("kiln.workflow", wf.id.clone()),
            Attribute::new("kiln.template", wf.template.clone()),
            Attribute::new("kiln.hardware", wf.hardware.clone()),
            Attribute::new("kiln.state", wf.state.as_str()),
            Attribute::new("kiln.reason", wf.reason.clone()),
        ],
        error: (wf.state != WorkflowState::Success).then(|| format!("{}: {}", wf.state.as_str(), wf.reason)),
    }
}

/// One ended attempt: its span and its phases'.
fn attempt_spans(wf: &Workflow, index: usize, i: usize, trace: WorkflowTrace) -> Vec<RecordedSpan> {
    let action = &wf.actions[index];
    let attempt = &action.attempts[i];
    let end = attempt.finished_at.unwrap_or(attempt.created_at);
    let span_id = WorkflowTrace::attempt_span(&attempt.id);
    let phase = |name: &'static str, start: Option<Millis>, stop: Option<Millis>| {
        let (start, stop) = (start?, stop?);
        Some(RecordedSpan {
            name: Cow::Borrowed(name),
            trace,
            span_id: WorkflowTrace::child_span(&attempt.id, name),
            parent: Some(span_id),
            start: millis_to_time(start),
            end: millis_to_time(stop),
            attributes: Vec::new(),
            error: None,
        })
    };
    let mut spans = vec![RecordedSpan {
        name: format!("action {}", action.spec.name).into(),
        trace,
        span_id,
        parent: Some(trace.root),
        start: millis_to_time(attempt.created_at),
        end: millis_to_time(end),
        attributes: vec![
            Attribute::new("kiln.workflow", wf.id.clone()),
            Attribute::new("kiln.action", action.spec.name.clone()),
            Attribute::new("kiln.action.index", i64::from(action.index)),
            Attribute::new("kiln.attempt", i64::from(attempt.number)),
            Attribute::new("kiln.attempt_id", attempt.id.clone()),
            Attribute::new("kiln.agent", attempt.agent_id.clone()),
            Attribute::new("kiln.image", action.spec.image.clone()),
            Attribute::new("kiln.state", attempt.state.as_str()),
            Attribute::new("kiln.reason", attempt.reason.clone()),
            Attribute::new("kiln.exit_code", attempt.exit_code.unwrap_or(-1)),
        ],
        error: (attempt.state != ActionState::Success).then(|| format!("{}: {}", attempt.reason, attempt.message)),
    }];
    spans.extend(phase("dispatch", due_at(wf, index, i), Some(attempt.created_at)));
    spans.extend(phase("pull", attempt.pulling_at, attempt.running_at.or(attempt.finished_at)));
    spans.extend(phase("run", attempt.running_at, attempt.finished_at));
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Attempt};

    fn attempt(id: &str, state: ActionState, created: Millis, finished: Option<Millis>) -> Attempt {
        Attempt {
            id: id.into(),
            number: 1,
            agent_id: "m1".into(),
            state,
            created_at: created,
            pulling_at: Some(created + 10),
            running_at: Some(created + 50),
            finished_at: finished,
            exit_code: finished.map(|_| 0),
            reason: String::new(),
            message: String::new(),
            output_json: String::new(),
            lease_expires_at: None,
        }
    }

    fn workflow(actions: Vec<Vec<Attempt>>) -> Workflow {
        Workflow {
            id: "w".into(),
            template: "t".into(),
            hardware: "m1".into(),
            hardware_map: Default::default(),
            state: WorkflowState::Running,
            reason: String::new(),
            global_timeout_seconds: None,
            boot_options: None,
            created_at: 100,
            started_at: Some(150),
            finished_at: None,
            actions: actions
                .into_iter()
                .enumerate()
                .map(|(i, attempts)| Action {
                    index: i as u32,
                    spec: kiln_documents::PlannedAction { name: format!("a{i}"), ..Default::default() },
                    attempts,
                })
                .collect(),
        }
    }

    #[test]
    fn each_transition_emits_what_it_ended_once_in_the_workflows_trace() {
        let mut wf = workflow(vec![vec![attempt("x0", ActionState::Running, 200, None)], vec![]]);
        let trace = WorkflowTrace::of("w", 100);
        // a0 ends: its span and its phases.
        let before = Before::of(&wf);
        wf.actions[0].attempts[0] = attempt("x0", ActionState::Success, 200, Some(1000));
        let spans = ended_spans(&before, &wf);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["action a0", "pull", "run"], "the first action has no dispatch delay");
        assert!(spans.iter().all(|s| s.trace == trace));
        assert_eq!(spans[0].span_id, WorkflowTrace::attempt_span("x0"));
        assert_eq!(spans[0].parent, Some(trace.root));
        assert!(spans[1..].iter().all(|s| s.parent == Some(spans[0].span_id)));
        assert_eq!((spans[2].start, spans[2].end), (millis_to_time(250), millis_to_time(1000)));
        // Repeated (nothing changed): nothing new.
        assert!(ended_spans(&Before::of(&wf), &wf).is_empty());
        // a1 is handed out (nothing ends), then fails, and so does the workflow.
        let before = Before::of(&wf);
        wf.actions[1].attempts.push(attempt("x1", ActionState::Pending, 1300, None));
        assert!(ended_spans(&before, &wf).is_empty());
        let before = Before::of(&wf);
        let mut failed = attempt("x1", ActionState::Failed, 1300, Some(2000));
        failed.reason = "NonZeroExit".into();
        wf.actions[1].attempts[0] = failed;
        wf.state = WorkflowState::Failed;
        wf.reason = "action a1 failed".into();
        wf.finished_at = Some(2000);
        let spans = ended_spans(&before, &wf);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["action a1", "dispatch", "pull", "run", "workflow w"]);
        assert_eq!((spans[1].start, spans[1].end), (millis_to_time(1000), millis_to_time(1300)), "due .. handed out");
        assert_eq!(spans[0].error.as_deref(), Some("NonZeroExit: "));
        let root = &spans[4];
        assert_eq!((root.span_id, root.parent), (trace.root, None));
        assert_eq!((root.start, root.end), (millis_to_time(100), millis_to_time(2000)));
        assert_eq!(root.error.as_deref(), Some("FAILED: action a1 failed"));
        assert_eq!(traceparent(&wf, "x1"), format!("00-{}-{}-01", trace.trace_id, WorkflowTrace::attempt_span("x1")));
    }
}
