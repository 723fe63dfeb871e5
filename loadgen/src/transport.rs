//! How a worker sends one request and reads the whole response.
//!
//! Two mechanisms behind one call: reqwest where its features are needed (cookie jars for
//! `--sessions`, HTTP/2, TLS), and otherwise a lean HTTP/1.1 connection per worker and URL
//! (`http1`): the request serialized once, the response parsed in place, no pool, no
//! connection task, no allocation per request.

use std::sync::Arc;

use reqwest::header::HeaderName;
use reqwest::{Client, Method, Url};

use crate::config::{RequestTemplate, RunConfig};
use crate::http1::{self, Connection, Failure};
use crate::outcome::{ErrorKind, Outcome};
use crate::recorder::{NO_RESPONSE, Recorder};

/// Whether the lean HTTP/1.1 path can serve this run.
pub fn lean_path_applies(config: &RunConfig) -> bool {
    !config.http2
        && config.sessions.is_none()
        && config.request.urls.iter().all(|url| url.scheme() == "http")
}

/// A worker's (or a virtual user's) way of sending requests.
pub enum Transport {
    Reqwest(Client),
    Http1(Http1Connections),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Reqwest(_) => "Transport::Reqwest",
            Transport::Http1(_) => "Transport::Http1",
        })
    }
}

/// What the lean path needs to know about one URL, computed once.
#[derive(Debug, Clone)]
pub struct Http1Target {
    /// `host:port` to connect to.
    authority: String,
    /// The whole request: head, the user's headers and body.
    request: Box<[u8]>,
    /// A response to HEAD has no body whatever its headers say.
    head_request: bool,
}

impl Http1Target {
    pub fn for_urls(template: &RequestTemplate) -> Result<Vec<Self>, String> {
        template
            .urls
            .iter()
            .map(|url| {
                let host = url
                    .host_str()
                    .ok_or_else(|| format!("`{url}` has no host"))?;
                let port = url.port_or_known_default().unwrap_or(80);
                let host_header = match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                };
                let path = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_owned(),
                };
                // `Url` has already percent-encoded anything that may not go on the wire.
                if path
                    .bytes()
                    .any(|byte| byte.is_ascii_control() || byte == b' ')
                {
                    return Err(format!("`{url}`: the path cannot be sent as is"));
                }
                let request = http1::serialize_request(
                    &template.method,
                    &path,
                    &host_header,
                    &template.headers,
                    template.body.as_deref(),
                );
                Ok(Self {
                    authority: format!("{host}:{port}"),
                    request: request.into_boxed_slice(),
                    head_request: template.method == Method::HEAD,
                })
            })
            .collect()
    }
}

/// One HTTP/1.1 connection per URL, opened on first use and again after the peer
/// closes it.
pub struct Http1Connections {
    targets: Arc<[Http1Target]>,
    connections: Vec<Option<Connection>>,
    keepalive: bool,
    group_by: HeaderName,
}

impl Http1Connections {
    pub fn new(targets: Arc<[Http1Target]>, keepalive: bool, group_by: HeaderName) -> Self {
        let connections = (0..targets.len()).map(|_| None).collect();
        Self {
            targets,
            connections,
            keepalive,
            group_by,
        }
    }

    async fn exchange(
        &mut self,
        index: usize,
        recorder: &mut Recorder,
    ) -> Result<(Outcome, u16), Outcome> {
        let target = &self.targets[index];
        // Taken out: a connection whose exchange fails or is cancelled by the timeout is
        // in an unknown state and is dropped.
        let mut reused = self.connections[index].is_some();
        let mut connection = match self.connections[index].take() {
            Some(connection) => connection,
            None => open(target).await?,
        };
        let response = loop {
            match connection
                .exchange(
                    &target.request,
                    target.head_request,
                    &self.group_by,
                    |value| recorder.group_of_value(value),
                )
                .await
            {
                Ok(response) => break response,
                // The server closed the idle connection before it saw the request (its
                // keep-alive timeout): not a failed request; send it on a new connection.
                Err(Failure {
                    kind: ErrorKind::Closed | ErrorKind::Reset,
                    before_response: true,
                }) if reused => {
                    reused = false;
                    connection = open(target).await?;
                }
                Err(failure) => return Err(Outcome::Error(failure.kind)),
            }
        };
        if self.keepalive && response.keep_alive {
            self.connections[index] = Some(connection);
        }
        Ok((Outcome::Status(response.status), response.group))
    }
}

async fn open(target: &Http1Target) -> Result<Connection, Outcome> {
    Connection::open(&target.authority)
        .await
        .map_err(Outcome::Error)
}

impl Transport {
    /// One request and its whole response body.
    pub async fn exchange(
        &mut self,
        template: &RequestTemplate,
        url_index: usize,
        url: &Url,
        recorder: &mut Recorder,
    ) -> (Outcome, u16) {
        match self {
            Transport::Reqwest(client) => reqwest_exchange(client, template, url, recorder).await,
            Transport::Http1(connections) => connections
                .exchange(url_index, recorder)
                .await
                .unwrap_or_else(|outcome| (outcome, NO_RESPONSE)),
        }
    }
}

async fn reqwest_exchange(
    client: &Client,
    template: &RequestTemplate,
    url: &Url,
    recorder: &mut Recorder,
) -> (Outcome, u16) {
    let mut request = client.request(template.method.clone(), url.clone());
    if !template.headers.is_empty() {
        request = request.headers(template.headers.clone());
    }
    if let Some(body) = &template.body {
        request = request.body(body.clone());
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (Outcome::Error(ErrorKind::classify(&error)), NO_RESPONSE),
    };
    let status = response.status().as_u16();
    let group = recorder.group_of(response.headers());
    // Drain the body chunk by chunk: the connection is reused only once it is read, and
    // nothing is copied.
    loop {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => return (Outcome::Status(status), group),
            Err(error) => return (Outcome::Error(ErrorKind::classify(&error)), NO_RESPONSE),
        }
    }
}
