//! Traces: with `--otlp-endpoint`, the server and the agent export one
//! OpenTelemetry trace per workflow over OTLP/gRPC. The collector here is
//! an OTLP trace service built from the protocol's own definitions
//! (opentelemetry-proto), receiving what the real exporters send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_tests::{Machine, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

const LIMIT: Duration = Duration::from_secs(120);

/// A span as received, with its service's name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace: Vec<u8>,
    span: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
    start: u64,
    end: u64,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service =
                resource.resource.as_ref().and_then(|r| text(&r.attributes).remove("service.name")).unwrap_or_default();
            for scope in resource.scope_spans {
                for s in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: s.name,
                        trace: s.trace_id,
                        span: s.span_id,
                        parent: s.parent_span_id,
                        attributes: text(&s.attributes),
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves the collector on a loopback port, in a runtime of its own.
fn start_collector() -> (String, Collector) {
    let collector = Collector::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let service = collector.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
    (format!("http://{addr}"), collector)
}

fn shell_action(name: &str, cmd: &str, extra: &str) -> String {
    format!(
        "        - name: {name}\n          image: IMAGE\n          timeout: 60\n          command: [\"sh\", \"-c\", {cmd:?}]\n{extra}"
    )
}

/// Fails the first time it runs in a workflow, succeeds after.
const FLAKY: &str = "if [ -e /workflow/tried ]; then echo second try; else touch /workflow/tried; exit 1; fi";

#[test]
fn one_trace_per_workflow_across_server_and_agent() {
    let (endpoint, collector) = start_collector();
    let m = Machine::start_with(&["--otlp-endpoint", &endpoint], &format!("otlp_endpoint: {endpoint}\n"));
    let c = &m.cluster;
    let wf = m.run(
        &[
            shell_action("first", "echo one", ""),
            shell_action("flaky", FLAKY, "          retries: 1\n          retry_backoff: 1\n"),
        ]
        .concat(),
    );
    assert_eq!(c.wait_finished(&wf, LIMIT)["state"], "SUCCESS");

    // The agent's exporter sends every few seconds: wait for its last
    // report span (the retry's SUCCESS) and the server's root span.
    let root_name = format!("workflow {wf}");
    let spans = || collector.spans.lock().unwrap().clone();
    let complete = |s: &[Received]| {
        s.iter().any(|r| r.name == root_name)
            && s.iter().filter(|r| r.service == "kiln-agent" && r.name == "report").count() >= 6
    };
    let waited = wait_until(Duration::from_secs(60), || complete(&spans()));
    let all = spans();
    assert!(waited.is_ok(), "the trace is incomplete: {all:#?}\n{}", c.logs());

    // One trace: the root's. Nothing of this workflow is anywhere else.
    let root = all.iter().find(|r| r.name == root_name).unwrap();
    assert_eq!((root.service.as_str(), root.parent.len()), ("kiln-server", 0), "{root:?}");
    assert_eq!(root.attributes["kiln.state"], "SUCCESS");
    let trace: Vec<&Received> = all.iter().filter(|r| r.trace == root.trace).collect();
    assert!(all.iter().filter(|r| r.attributes.get("kiln.workflow") == Some(&wf)).all(|r| r.trace == root.trace));
    let count = |service: &str, name: &str| trace.iter().filter(|r| r.service == service && r.name == name).count();
    // The server: the workflow, its apply, three attempts (the flaky one
    // twice), each dispatch after the first, and each attempt's phases.
    assert_eq!(count("kiln-server", &root_name), 1);
    assert_eq!(count("kiln-server", "apply"), 1);
    assert_eq!(count("kiln-server", "action first"), 1);
    assert_eq!(count("kiln-server", "action flaky"), 2);
    assert_eq!(count("kiln-server", "dispatch"), 2, "the second action and the retry waited to be handed out");
    assert_eq!(count("kiln-server", "pull"), 3);
    assert_eq!(count("kiln-server", "run"), 3);
    // The agent: its side of each attempt, and PULLING, RUNNING, and the
    // end reported for each.
    assert_eq!(count("kiln-agent", "attempt"), 3);
    assert_eq!(count("kiln-agent", "pull"), 3);
    assert_eq!(count("kiln-agent", "run"), 3);
    assert_eq!(count("kiln-agent", "report"), 9);

    // The tree: every span hangs under one in the trace; the agent's
    // attempt spans under the server's span of the same attempt.
    let ids: HashMap<&[u8], &Received> = trace.iter().map(|r| (r.span.as_slice(), *r)).collect();
    assert_eq!(ids.len(), trace.len(), "span ids are unique");
    for span in &trace {
        if span.name == root_name {
            continue;
        }
        let parent = ids.get(span.parent.as_slice()).unwrap_or_else(|| panic!("{span:#?} has no parent in the trace"));
        assert!(parent.start <= span.start + 1_000_000_000, "a child starts (about) after its parent: {span:?}");
        if span.service == "kiln-agent" && span.name == "attempt" {
            assert!(parent.name.starts_with("action "), "{span:?} under {parent:?}");
            assert_eq!(span.attributes["attempt"], parent.attributes["kiln.attempt_id"]);
        }
    }
    let failed: Vec<&&Received> =
        trace.iter().filter(|r| r.name == "action flaky" && r.attributes["kiln.state"] == "FAILED").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attributes["kiln.reason"], "NonZeroExit");
    assert!(trace.iter().all(|r| r.end >= r.start));
}
