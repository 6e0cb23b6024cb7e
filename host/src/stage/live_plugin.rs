//! The plugin as a stage task calls it: the [`Plugin`] trait (a fake in unit tests) and the
//! stage's own instance, which follows hot swaps between two events.

use std::sync::{Arc, Mutex};

use super::processor::{Failure, Input, Processed, StageContext};
use crate::plugin::{LoadedPlugin, PluggedInstance};
use crate::state::KeyedState;

/// The plugin as the task calls it.
pub trait Plugin: Send {
    /// Processes `input` with the live version; that version, and what it made.
    fn process(
        &mut self,
        context: &StageContext,
        input: &Input<'_>,
        state: Option<&Arc<Mutex<KeyedState>>>,
    ) -> (Arc<str>, Result<Processed, Failure>);
}

/// A stage's own plugin instance, following hot swaps between two events.
pub struct LivePlugin {
    instance: PluggedInstance,
    /// The version last called, shared by the fates of its events.
    version: Option<(Arc<LoadedPlugin>, Arc<str>)>,
}

impl LivePlugin {
    /// Calls `instance`.
    pub fn new(instance: PluggedInstance) -> Self {
        Self {
            instance,
            version: None,
        }
    }

    /// The live version.
    pub fn version(&self) -> &str {
        self.instance.version()
    }
}

impl Plugin for LivePlugin {
    fn process(
        &mut self,
        context: &StageContext,
        input: &Input<'_>,
        state: Option<&Arc<Mutex<KeyedState>>>,
    ) -> (Arc<str>, Result<Processed, Failure>) {
        let instance = self.instance.current();
        let version = match &self.version {
            Some((plugin, version)) if Arc::ptr_eq(plugin, instance.plugin()) => version.clone(),
            _ => {
                let version: Arc<str> = Arc::from(instance.plugin().version.as_str());
                self.version = Some((instance.plugin().clone(), version.clone()));
                version
            }
        };
        (version, context.process(instance, input, true, state))
    }
}
