//! Runs BMC jobs ([`crate::app::bmc::App::submit_bmc_job`]): claims due
//! jobs from the store with a lease (so replicas never run one at once),
//! runs each, and records how it ended: succeeded, retried with backoff on a
//! transient error (unreachable, timed out, 5xx), or failed (anything else,
//! or its deadline passed). A server that dies mid-job leaves its lease to
//! run out, after which another server claims the job again; the same
//! server restarted (its name is kept in the data directory) releases the
//! jobs it held at once.
//! Power and boot operations are safe to run twice (on, off, boot device
//! are idempotent; a cycle run twice cycles twice, which leaves the machine
//! in the state asked for).

use std::sync::Arc;
use std::time::Duration;

use crate::app::bmc::{BmcOperation, workflow_of_job_key, workflow_step_failure};
use crate::app::{App, AppError};
use crate::model::{Millis, now_millis};
use crate::store::{BmcJob, JobEnd};

/// Longer than the longest BMC call (an IPMI session: 6 × the 30 s timeout).
pub const JOB_LEASE: Duration = Duration::from_secs(300);
/// Runs of one job at most.
pub const MAX_ATTEMPTS: u32 = 5;
/// How often the runner looks for due jobs without being woken.
const POLL: Duration = Duration::from_secs(1);

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... at most 60 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

pub async fn run(app: Arc<App>) {
    let owner = app.bmc.job_owner.clone();
    // Jobs this server held when it stopped died with it: run them again
    // now rather than when their lease runs out.
    match app.store.release_bmc_jobs(&owner).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "BMC jobs this server was running when it stopped are due again"),
        Err(e) => tracing::error!(error = %e.detailed(), "cannot release this server's BMC jobs"),
    }
    loop {
        loop {
            let Ok(slot) = app.bmc.job_slots.clone().try_acquire_owned() else { break };
            let now = now_millis();
            match app.store.claim_bmc_job(&owner, now, now + JOB_LEASE.as_millis() as Millis).await {
                Ok(Some(job)) => {
                    step_changed(&app, &job);
                    let (app, owner) = (app.clone(), owner.clone());
                    tokio::spawn(async move {
                        run_one(&app, &owner, job).await;
                        drop(slot);
                        app.bmc.job_submitted.notify_one();
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e.detailed(), "BMC job claim failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = app.bmc.job_submitted.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn run_one(app: &App, owner: &str, job: BmcJob) {
    let end = match end_of(app, &job).await {
        Ok(end) => end,
        Err(e) => JobEnd::Failed { error: e.to_string() },
    };
    match &end {
        JobEnd::Succeeded { result } => {
            tracing::info!(job = %job.id, hardware = %job.hardware_id, operation = %job.operation, %result, "BMC job done")
        }
        JobEnd::Retry { error, .. } => {
            tracing::warn!(job = %job.id, attempt = job.attempts, %error, "BMC job will be retried")
        }
        JobEnd::Failed { error } => tracing::warn!(job = %job.id, attempt = job.attempts, %error, "BMC job failed"),
    }
    let failed = match &end {
        JobEnd::Failed { error } => Some(error.clone()),
        _ => None,
    };
    match app.store.finish_bmc_job(&job.id, owner, end).await {
        Ok(true) => {
            step_changed(app, &job);
            // A workflow's BMC step that failed fails the workflow, saying
            // which step on which BMC, rather than leaving it waiting.
            if let (Some(error), Some((workflow, step))) = (failed, workflow_of_job_key(&job.key)) {
                let reason = workflow_step_failure(&job, step, &error);
                if let Err(e) = app.fail_workflow_for_bmc(workflow, step, &reason).await {
                    tracing::error!(workflow, error = %e, "cannot fail the workflow of a failed BMC step");
                }
            }
        }
        Ok(false) => tracing::warn!(job = %job.id, "BMC job: lease lost before it ended; another server owns it"),
        Err(e) => tracing::error!(job = %job.id, error = %e.detailed(), "BMC job: cannot record its end"),
    }
}

/// A workflow's BMC step moved on: whoever watches the workflow here sees
/// it at once (watchers on other replicas look again within a second).
fn step_changed(app: &App, job: &BmcJob) {
    if let Some((workflow, _)) = workflow_of_job_key(&job.key) {
        app.events.workflow_changed(workflow);
    }
}

async fn end_of(app: &App, job: &BmcJob) -> Result<JobEnd, AppError> {
    if now_millis() > job.deadline {
        let last = if job.error.is_empty() { String::new() } else { format!("; last error: {}", job.error) };
        return Ok(JobEnd::Failed { error: format!("timed out after {} attempts{last}", job.attempts - 1) });
    }
    let operation: BmcOperation =
        job.operation.parse().map_err(|e: String| AppError::FailedPrecondition(format!("stored job: {e}")))?;
    let result = match operation {
        BmcOperation::Power(action) => app.run_power(&job.hardware_id, Some(action)).await.map(|r| r.state),
        BmcOperation::Boot(boot) => app
            .run_boot(&job.hardware_id, boot)
            .await
            .map(|b| b.target.map_or_else(|| "set".to_string(), |t| format!("target {t}"))),
        BmcOperation::Start { device, cycle } => app.run_start(&job.hardware_id, device, cycle).await,
        BmcOperation::StartIso { cycle } => app.run_start_iso(&job.hardware_id, cycle).await,
        BmcOperation::Eject(then) => app.run_eject(&job.hardware_id, then.map(|b| *b)).await,
    };
    Ok(match result {
        Ok(result) => JobEnd::Succeeded { result },
        Err(e @ AppError::Unavailable(_)) if job.attempts < MAX_ATTEMPTS => {
            let at = now_millis() + backoff(job.attempts).as_millis() as Millis;
            if at < job.deadline {
                JobEnd::Retry { error: e.to_string(), at }
            } else {
                JobEnd::Failed { error: e.to_string() }
            }
        }
        Err(e) => JobEnd::Failed { error: e.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
