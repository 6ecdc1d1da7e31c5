//! PULLING: the image of a new container, and those of the actions after it.

use kiln_documents::ImageRef;
use kiln_proto::v1::ActionState;

use super::{Abandoned, Attempt, Ending, report};
use crate::runtime;

/// Makes the attempt's image present; the failure to report if it cannot.
pub(super) async fn pull_image(at: &Attempt<'_>) -> Result<Option<Ending>, Abandoned> {
    let Attempt { agent, a, image, runtime, .. } = *at;
    // A container of an earlier attempt that the server declared lost may
    // still run (this agent was cut off, not dead): it must not write the
    // disk beside this attempt's.
    runtime::remove_running_except(runtime.as_ref(), &agent.id, &a.attempt_id).await;
    report(agent, a, ActionState::Pulling, None).await?;
    let credentials = agent.config.credentials_for(&image.registry);
    // A background pull of this image (started while an earlier action ran)
    // counts; if it failed, pull again and report that.
    let prefetched = match agent.prefetch.pull_of(&a.workflow_id, image) {
        Some(pull) => pull.await.is_ok(),
        None => false,
    };
    if !prefetched && let Err(e) = runtime.ensure_image(image, agent.config.pull_policy, credentials).await {
        return Ok(Some(Ending::failed("PullFailed", e.to_string())));
    }
    start_prefetch(at);
    Ok(None)
}

/// Pulls the images of the next actions in the background, those this
/// machine's allow-list accepts (the others fail when their turn comes).
fn start_prefetch(at: &Attempt<'_>) {
    let Attempt { agent, a, runtime, .. } = *at;
    let images = a
        .upcoming_images
        .iter()
        .filter_map(|i| ImageRef::parse(i).ok())
        .filter(|i| agent.image_policy.check(i).is_ok())
        .map(|i| {
            let credentials = agent.config.credentials_for(&i.registry).cloned();
            (i, credentials)
        })
        .collect();
    agent.prefetch.start(&a.workflow_id, images, runtime, agent.config.pull_policy);
}
