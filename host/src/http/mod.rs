//! The HTTP server: the declared ingress routes (`[[http.routes]]`) and read models
//! (`[[http.views]]`), `/healthz` and `/readyz`. The host knows no route of its own besides
//! the last two: every path comes from pipeline.toml.

mod endpoints;
mod reply;
mod server;
mod views;

pub use endpoints::{IngressEndpoint, Submit, ViewEndpoint, ViewShaper};
pub use reply::Reply;
pub use server::{HttpState, bind, router, serve};
pub use views::TopicView;
