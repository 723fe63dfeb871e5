//! How a worker sends one request and reads the whole response.
//!
//! Two mechanisms behind one call: reqwest where its features are needed (cookie jars for
//! `--sessions`, HTTP/2, TLS), and otherwise a lean HTTP/1.1 connection per worker and URL
//! on hyper's connection API: no pool, no URL re-parsing, no boxed futures per request,
//! which roughly halves the CPU spent per request on the common plain-HTTP path.

use std::error::Error as StdError;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use reqwest::header::{HOST, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use tokio::net::TcpStream;

use crate::config::{RequestTemplate, RunConfig};
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
    /// Origin-form request target (`/path?query`).
    path: hyper::Uri,
    /// Host plus the user's headers, cloned into every request.
    headers: HeaderMap,
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
                let mut headers = HeaderMap::new();
                headers.insert(
                    HOST,
                    HeaderValue::from_str(&host_header).map_err(|e| format!("`{url}`: {e}"))?,
                );
                for (name, value) in &template.headers {
                    headers.append(name.clone(), value.clone());
                }
                Ok(Self {
                    authority: format!("{host}:{port}"),
                    path: path.parse().map_err(|e| format!("`{url}`: {e}"))?,
                    headers,
                })
            })
            .collect()
    }
}

/// One HTTP/1.1 connection per URL, opened on first use and again after the peer
/// closes it.
pub struct Http1Connections {
    targets: std::sync::Arc<[Http1Target]>,
    senders: Vec<Option<SendRequest<Full<Bytes>>>>,
    keepalive: bool,
}

impl Http1Connections {
    pub fn new(targets: std::sync::Arc<[Http1Target]>, keepalive: bool) -> Self {
        let senders = (0..targets.len()).map(|_| None).collect();
        Self {
            targets,
            senders,
            keepalive,
        }
    }

    async fn connect(target: &Http1Target) -> Result<SendRequest<Full<Bytes>>, Outcome> {
        let stream = TcpStream::connect(&target.authority)
            .await
            .map_err(|error| {
                Outcome::Error(ErrorKind::from_chain(&error).unwrap_or(ErrorKind::Connect))
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| failure(&error, ErrorKind::Connect))?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn exchange(
        &mut self,
        index: usize,
        template: &RequestTemplate,
        recorder: &mut Recorder,
    ) -> Result<(Outcome, u16), Outcome> {
        let target = &self.targets[index];
        let slot = &mut self.senders[index];
        if let Some(sender) = slot.as_mut()
            && sender.ready().await.is_err()
        {
            // Closed by the peer while idle (keep-alive timeout): not a failed request.
            *slot = None;
        }
        let mut sender = match slot.take() {
            Some(sender) => sender,
            None => Self::connect(target).await?,
        };
        let mut request = hyper::Request::new(Full::new(template.body.clone().unwrap_or_default()));
        *request.method_mut() = template.method.clone();
        *request.uri_mut() = target.path.clone();
        *request.headers_mut() = target.headers.clone();
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| failure(&error, ErrorKind::Other))?;
        if self.keepalive {
            *slot = Some(sender);
        }
        let status = response.status().as_u16();
        let group = recorder.group_of(response.headers());
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|error| failure(&error, ErrorKind::Body))?;
        }
        Ok((Outcome::Status(status), group))
    }
}

fn failure(error: &(dyn StdError + 'static), fallback: ErrorKind) -> Outcome {
    Outcome::Error(ErrorKind::from_chain(error).unwrap_or(fallback))
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
                .exchange(url_index, template, recorder)
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
