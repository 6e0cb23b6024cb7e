//! The console page and its modules and style, embedded in the binary (no CDN, nothing to
//! install next to the host).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page.
const INDEX_HTML: &str = include_str!("assets/index.html");

/// The files under `/console/`: name, content type, body. `app.js` imports the others.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("assets/app.css")),
    ("app.js", JS, include_str!("assets/app.js")),
    ("util.js", JS, include_str!("assets/util.js")),
    ("state.js", JS, include_str!("assets/state.js")),
    ("metrics.js", JS, include_str!("assets/metrics.js")),
    ("graph.js", JS, include_str!("assets/graph.js")),
    ("topology.js", JS, include_str!("assets/topology.js")),
    ("plugins.js", JS, include_str!("assets/plugins.js")),
    ("deadletters.js", JS, include_str!("assets/deadletters.js")),
    ("trace.js", JS, include_str!("assets/trace.js")),
];
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The routes of the page and its assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console", get(index))
        .route("/console/{file}", get(asset))
}

async fn index() -> Response {
    answer("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => answer(content_type, body),
        None => (
            StatusCode::NOT_FOUND,
            format!("no console file {file}; the console is at /console"),
        )
            .into_response(),
    }
}

fn answer(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let names: Vec<&str> = ASSETS.iter().map(|(name, _, _)| *name).collect();
        for (_, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let module = line
                    .rsplit_once("'./")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(module, _)| module);
                assert!(
                    module.is_some_and(|m| names.contains(&m)),
                    "{line} imports a file not served"
                );
            }
        }
        assert!(INDEX_HTML.contains(r#"src="/console/app.js""#));
    }

    #[test]
    fn the_page_reads_only_metrics_the_host_exports() {
        let mut read = 0;
        for (file, _, body) in ASSETS {
            for (at, _) in body.match_indices("'stagehost_") {
                let name: String = body[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(
                    crate::observe::catalogue::find(&name).is_some(),
                    "{file} reads {name}, which is not in observe/catalogue.rs"
                );
                read += 1;
            }
        }
        assert!(read >= 4, "the metric names moved: {read} found");
    }
}
