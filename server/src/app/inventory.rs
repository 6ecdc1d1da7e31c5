//! Reading what operators applied: hardware, templates, action definitions.

use super::{App, AppError, OpContext};
use crate::store::{StoredDefinition, StoredHardware, StoredTemplate};

impl App {
    pub async fn get_hardware(&self, opctx: &OpContext, id: &str) -> Result<StoredHardware, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.get_hardware(id).await?)
    }

    pub async fn list_hardware(&self, opctx: &OpContext) -> Result<Vec<StoredHardware>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_hardware().await?)
    }

    pub async fn get_template(&self, opctx: &OpContext, name: &str) -> Result<StoredTemplate, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.get_template(name).await?)
    }

    pub async fn list_templates(&self, opctx: &OpContext) -> Result<Vec<StoredTemplate>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_templates().await?)
    }

    pub async fn list_action_definitions(&self, opctx: &OpContext) -> Result<Vec<StoredDefinition>, AppError> {
        opctx.require_operator_read()?;
        Ok(self.store.list_definitions().await?)
    }
}
