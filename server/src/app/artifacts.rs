//! Files actions leave (their `/out`, or the action API): in from agents
//! and actions, out to operators.

use bytes::Bytes;
use futures_util::Stream;

use super::{App, AppError, OpContext};
use crate::artifacts::WriteError;
use crate::metrics::ArtifactSource;
use crate::model::now_millis;
use crate::store::Artifact;

/// Where an upload goes.
#[derive(Debug, Clone)]
pub struct ArtifactTarget {
    pub workflow_id: String,
    pub action_index: u32,
    pub attempt_id: String,
    pub path: String,
}

impl App {
    /// Stores an artifact of one of the calling agent's attempts (a file its
    /// action left in `/out`), `size` bytes as announced.
    pub async fn upload_artifact(
        &self,
        opctx: &OpContext,
        target: ArtifactTarget,
        size: u64,
        body: impl Stream<Item = Result<Bytes, AppError>> + Unpin,
    ) -> Result<Artifact, AppError> {
        let agent = opctx.require_agent()?;
        self.check_attempt_owner(agent, &target.workflow_id, target.action_index, &target.attempt_id).await?;
        let artifact = self.write_artifact(target, Some(size), body).await?;
        self.metrics.artifact_received(ArtifactSource::Agent, artifact.size);
        tracing::info!(agent = %agent, workflow = %artifact.workflow_id, path = %artifact.path, size = artifact.size, "artifact stored");
        Ok(artifact)
    }

    /// Stores a file an action posts to the action API as an artifact of its
    /// own attempt (the one its token names).
    pub async fn upload_action_file(
        &self,
        opctx: &OpContext,
        path: &str,
        body: impl Stream<Item = Result<Bytes, AppError>> + Unpin,
    ) -> Result<Artifact, AppError> {
        let (workflow_id, action_index, attempt_id) = opctx.require_action()?;
        let target = ArtifactTarget {
            workflow_id: workflow_id.to_string(),
            action_index,
            attempt_id: attempt_id.to_string(),
            path: path.to_string(),
        };
        let artifact = self.write_artifact(target, None, body).await?;
        self.metrics.artifact_received(ArtifactSource::Action, artifact.size);
        Ok(artifact)
    }

    async fn write_artifact(
        &self,
        target: ArtifactTarget,
        announced: Option<u64>,
        body: impl Stream<Item = Result<Bytes, AppError>> + Unpin,
    ) -> Result<Artifact, AppError> {
        let written =
            self.artifacts.write(&target.attempt_id, &target.path, announced, body).await.map_err(|e| match e {
                WriteError::BadPath(m) => AppError::InvalidArgument(m),
                WriteError::TooBig { size, limit } => AppError::ResourceExhausted(format!(
                    "artifact {:?} is {size} bytes; the limit is {limit}",
                    target.path
                )),
                WriteError::Short { announced, received } => AppError::DataLoss(format!(
                    "artifact {:?}: header says {announced} bytes, {received} arrived",
                    target.path
                )),
                WriteError::Body(e) => e,
                WriteError::Io(e) => AppError::internal(format!("storing artifact {:?}", target.path), e),
            })?;
        let artifact = Artifact {
            workflow_id: target.workflow_id,
            action_index: target.action_index,
            attempt_id: target.attempt_id,
            path: target.path,
            size: written.size,
            sha256: written.sha256,
            created_at: now_millis(),
        };
        self.store.put_artifact(artifact.clone()).await?;
        Ok(artifact)
    }

    /// The artifacts of a workflow.
    pub async fn list_artifacts(&self, opctx: &OpContext, workflow_id: &str) -> Result<Vec<Artifact>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_artifacts(workflow_id).await?)
    }

    /// The newest artifact `path` of the action `selector` names, opened for
    /// reading.
    pub async fn open_artifact(
        &self,
        opctx: &OpContext,
        workflow_id: &str,
        selector: &str,
        path: &str,
    ) -> Result<(Artifact, tokio::fs::File), AppError> {
        opctx.require_operator_read()?;
        let wf = self.store.get_workflow(workflow_id).await?;
        let index = super::logs::select_action(&wf, selector)?
            .ok_or_else(|| AppError::InvalidArgument("name the action the artifact belongs to".into()))?;
        let artifact = self
            .store
            .list_artifacts(workflow_id)
            .await?
            .into_iter()
            .rfind(|a| a.action_index == index && a.path == path)
            .ok_or_else(|| AppError::NotFound(format!("action {selector:?} has no artifact {path:?}")))?;
        let file_path = self
            .artifacts
            .locate(&artifact.attempt_id, &artifact.path)
            .map_err(|e| AppError::Internal { context: e, source: None })?;
        let file = tokio::fs::File::open(&file_path)
            .await
            .map_err(|e| AppError::internal(format!("artifact {} unreadable", artifact.path), e))?;
        Ok((artifact, file))
    }
}
