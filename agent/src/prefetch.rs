//! Pulling the images of a workflow's next actions while the current one
//! runs. The server lists them with each assignment (`upcoming_images`);
//! pulls run one at a time in that order, in the background, and the
//! attempt that needs an image waits for its pull instead of starting
//! another. On an emulated or slow machine a pull costs seconds even for a
//! small image, so a workflow of short actions is mostly pulls otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use kiln_documents::ImageRef;

use crate::config::{PullPolicy, RegistryCredentials};
use crate::runtime::SharedRuntime;

type Pull = Shared<BoxFuture<'static, Result<(), String>>>;

pub struct Prefetcher {
    state: Mutex<State>,
    /// One pull at a time: prefetches must not slow the pull of the action
    /// that is about to run.
    turn: Arc<tokio::sync::Semaphore>,
}

impl Default for Prefetcher {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
struct State {
    workflow: String,
    pulls: HashMap<String, Pull>,
}

impl Prefetcher {
    pub fn new() -> Self {
        Prefetcher { state: Mutex::default(), turn: Arc::new(tokio::sync::Semaphore::new(1)) }
    }

    /// Starts background pulls of `images` (those not started yet) for
    /// `workflow`; pulls of an earlier workflow are forgotten.
    pub fn start(
        &self,
        workflow: &str,
        images: Vec<(ImageRef, Option<RegistryCredentials>)>,
        runtime: &SharedRuntime,
        policy: PullPolicy,
    ) {
        let mut state = self.state.lock().expect("prefetch lock");
        if state.workflow != workflow {
            state.workflow = workflow.to_string();
            state.pulls.clear();
        }
        for (image, credentials) in images {
            let key = image.to_string();
            if state.pulls.contains_key(&key) {
                continue;
            }
            let (runtime, turn) = (runtime.clone(), self.turn.clone());
            let task = tokio::spawn(async move {
                let _turn = turn.acquire_owned().await.map_err(|e| e.to_string())?;
                let started = std::time::Instant::now();
                let result =
                    runtime.ensure_image(&image, policy, credentials.as_ref()).await.map_err(|e| e.to_string());
                tracing::info!(image = %image, took = ?started.elapsed(), ok = result.is_ok(), "prefetched");
                result
            });
            let pull: Pull = async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }.boxed().shared();
            state.pulls.insert(key, pull);
        }
    }

    /// The background pull of `image` for `workflow`, if one was started.
    pub fn pull_of(&self, workflow: &str, image: &ImageRef) -> Option<Pull> {
        let state = self.state.lock().expect("prefetch lock");
        if state.workflow != workflow {
            return None;
        }
        state.pulls.get(&image.to_string()).cloned()
    }
}
