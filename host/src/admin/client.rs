//! `stagehost plugin list | swap | rollback` and `stagehost stuck list | skip | retry`:
//! requests to a running host's admin API.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::PATH_HEADER;
use crate::plugin::{SlotReport, SwapOutcome};
use crate::stage::{Decision, StuckRecord};

/// A client of one host's admin API.
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the admin API at `address` (`host:port` or an `http://` URL).
    pub fn new(address: &str) -> anyhow::Result<Self> {
        let base = if address.starts_with("http://") || address.starts_with("https://") {
            address.trim_end_matches('/').to_string()
        } else {
            format!("http://{address}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, http })
    }

    /// Every stage's versions.
    pub async fn list(&self) -> anyhow::Result<Vec<SlotReport>> {
        let response = self
            .http
            .get(format!("{}/plugins", self.base))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// Swaps `stage` to the component in `file`.
    pub async fn swap(&self, stage: &str, file: &Path) -> anyhow::Result<SwapOutcome> {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read plugin {}", file.display()))?;
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let response = self
            .http
            .put(format!("{}/plugins/{stage}", self.base))
            .header(PATH_HEADER, absolute.display().to_string())
            .body(bytes)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// Rolls `stage` back to its previous version.
    pub async fn rollback(&self, stage: &str) -> anyhow::Result<SwapOutcome> {
        let response = self
            .http
            .post(format!("{}/plugins/{stage}/rollback", self.base))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// The records held because they cannot be dead-lettered.
    pub async fn stuck(&self) -> anyhow::Result<Vec<StuckRecord>> {
        let response = self
            .http
            .get(format!("{}/stuck", self.base))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// Decides what happens to the record held on `topic`/`partition` of `stage`.
    pub async fn decide_stuck(
        &self,
        stage: &str,
        topic: &str,
        partition: i32,
        decision: Decision,
    ) -> anyhow::Result<StuckRecord> {
        let action = match decision {
            Decision::Skip => "skip",
            Decision::Retry => "retry",
        };
        let response = self
            .http
            .post(format!(
                "{}/stuck/{stage}/{topic}/{partition}/{action}",
                self.base
            ))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach the admin API at {} (is the host running? set --admin or STAGEHOST_ADMIN to its admin.listen address)",
            self.base
        )
    }
}

async fn decode<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await.context("cannot read the answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        anyhow::bail!("{message} (HTTP {status})");
    }
    serde_json::from_str(&text).with_context(|| format!("unexpected answer: {text}"))
}

/// The `plugin list` table.
pub fn render_list(reports: &[SlotReport]) -> String {
    let mut out = String::new();
    for report in reports {
        out.push_str(&format!(
            "{}: {} ({} swaps, {} refused, longest stall {} µs)\n",
            report.stage, report.version, report.swaps, report.refused, report.max_stall_us
        ));
        for deployment in &report.history {
            out.push_str(&format!(
                "  {}  live since {}{}  stall {}  {}\n",
                deployment.version,
                deployment.live_since.as_deref().unwrap_or("(pending)"),
                deployment
                    .retired_at
                    .as_deref()
                    .map(|at| format!(" until {at}"))
                    .unwrap_or_else(|| " (live)".into()),
                deployment
                    .stall_us
                    .map(|us| format!("{us} µs"))
                    .unwrap_or_else(|| "-".into()),
                deployment.path.display(),
            ));
        }
    }
    out
}
