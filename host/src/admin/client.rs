//! `stagehost plugin list | swap | rollback` and `stagehost stuck list | skip | retry`:
//! requests to a running host's admin API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::PATH_HEADER;
use super::token::Token;
use crate::plugin::{SlotReport, SwapOutcome};
use crate::stage::{Decision, StuckRecord};

/// The admin API address when neither `--admin` nor the configuration names one.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9091";

/// Where a command finds a host's admin API and the token to send.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `--admin`: the address; else the configuration's `admin.listen`, else [`DEFAULT_ADDRESS`].
    pub address: Option<String>,
    /// `--admin-token`: the token; else the configuration's token file or generated token.
    pub token: Option<String>,
    /// `--config`: the host's pipeline.toml (its `admin` section and `state.dir`).
    pub config: PathBuf,
}

impl AdminTarget {
    /// The client of the admin API this target names.
    pub fn client(self) -> anyhow::Result<AdminClient> {
        let config = crate::config::load(&self.config, &crate::config::Overrides::from_env())
            .map_err(anyhow::Error::from);
        let token = super::token::client_token(self.token, config.as_ref())?;
        let address = self.address.unwrap_or_else(|| match &config {
            Ok(config) => reachable(&config.admin.listen),
            Err(_) => DEFAULT_ADDRESS.to_string(),
        });
        AdminClient::new(&address, token)
    }
}

/// An address to reach a listener on `listen` from this machine: loopback for `0.0.0.0`/`[::]`.
fn reachable(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(mut address) if address.ip().is_unspecified() => {
            let loopback = match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            address.set_ip(loopback);
            address.to_string()
        }
        _ => listen.to_string(),
    }
}

/// A client of one host's admin API.
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer …` on every call.
    token: Token,
}

impl AdminClient {
    /// A client of the admin API at `address` (`host:port` or an `http://` URL) sending `token`.
    pub fn new(address: &str, token: Token) -> anyhow::Result<Self> {
        let base = if address.starts_with("http://") || address.starts_with("https://") {
            address.trim_end_matches('/').to_string()
        } else {
            format!("http://{address}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, http, token })
    }

    /// A request to `path` carrying the token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
    }

    /// The console's address with the token in its fragment (never sent to a server): the
    /// page keeps it for the tab's session and sends it on its calls.
    pub fn console_url(&self) -> String {
        format!("{}/#token={}", self.base, self.token.expose())
    }

    /// Every stage's versions.
    pub async fn list(&self) -> anyhow::Result<Vec<SlotReport>> {
        let response = self
            .request(reqwest::Method::GET, "/plugins")
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
            .request(reqwest::Method::PUT, &format!("/plugins/{stage}"))
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
            .request(reqwest::Method::POST, &format!("/plugins/{stage}/rollback"))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        decode(response).await
    }

    /// The records held because they cannot be dead-lettered.
    pub async fn stuck(&self) -> anyhow::Result<Vec<StuckRecord>> {
        let response = self
            .request(reqwest::Method::GET, "/stuck")
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
            .request(
                reqwest::Method::POST,
                &format!("/stuck/{stage}/{topic}/{partition}/{action}"),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        assert_eq!(reachable("0.0.0.0:9091"), "127.0.0.1:9091");
        assert_eq!(reachable("[::]:9091"), "[::1]:9091");
        assert_eq!(reachable("10.0.0.5:9091"), "10.0.0.5:9091");
    }

    #[test]
    fn the_console_address_carries_the_token_in_its_fragment() {
        let client = AdminClient::new("127.0.0.1:9091", Token::new("t0123456789abcdef")).unwrap();
        assert_eq!(
            client.console_url(),
            "http://127.0.0.1:9091/#token=t0123456789abcdef"
        );
    }
}
