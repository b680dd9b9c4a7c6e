//! The `xt` commands that talk to the HTTP API (`submit`, `list`, `status`, `watch`,
//! `cancel`, `download`), mint tokens (`token`) and run the API (`serve`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::auth::{Role, Verifier, mint, secret};

/// Where the API is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The API's base URL.
    #[arg(
        long,
        env = "XT_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,
    /// A bearer token (see `xt token`).
    #[arg(long, env = "XT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl Remote {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.trim_end_matches('/'))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.auth(reqwest::Client::new().get(self.url(path)))
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

/// Turns an API error body into a message naming the field.
async fn check(r: reqwest::Response) -> Result<reqwest::Response> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let e = &body["error"];
    let message = e["message"].as_str().unwrap_or("no message");
    match e["field"].as_str() {
        Some(field) => bail!("{status}: {field}: {message}"),
        None => bail!("{status}: {message}"),
    }
}

/// Submits a batch; with `wait`, follows it and fails when more than `max_failed` of its
/// jobs failed.
pub async fn submit(
    remote: &Remote,
    spec: &std::path::Path,
    wait: bool,
    max_failed: f64,
) -> Result<()> {
    let body = std::fs::read(spec).with_context(|| format!("reading {}", spec.display()))?;
    let r = remote
        .auth(reqwest::Client::new().post(remote.url("/v1/batches")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let reply: Value = check(r).await?.json().await?;
    let id = reply["id"]
        .as_u64()
        .context("the API answered without a batch id")?;
    println!("batch {id}: {} jobs", reply["jobs"]);
    if wait {
        let summary = watch(remote, id).await?;
        crate::summary::check_failures(&summary, max_failed)?;
    }
    Ok(())
}

pub async fn list(remote: &Remote, offset: u32, limit: u32) -> Result<()> {
    let r = remote
        .get(&format!("/v1/batches?offset={offset}&limit={limit}"))
        .send()
        .await?;
    let reply: Value = check(r).await?.json().await?;
    let text = |v: &Value| match v {
        Value::String(s) => crate::summary::plain(s),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut table =
        vec![["id", "state", "jobs", "done", "failed", "submitted", "name"].map(String::from)];
    for b in reply["batches"].as_array().into_iter().flatten() {
        table.push([
            text(&b["id"]),
            text(&b["state"]),
            text(&b["jobs"]),
            text(&b["counts"]["done"]),
            text(&b["counts"]["failed"]),
            text(&b["submitted"]),
            text(&b["name"]),
        ]);
    }
    print!("{}", columns(&table));
    println!(
        "{} of {} batches",
        reply["batches"].as_array().map_or(0, |a| a.len()),
        reply["total"]
    );
    Ok(())
}

/// Prints a batch's status for people (its summary once done), or as the API's JSON.
/// Rows as aligned columns (numbers to the right), each as wide as its widest cell; the
/// last column is not padded.
pub fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..N).map(width).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            let numeric = !cell.is_empty() && cell.chars().all(|ch| ch.is_ascii_digit());
            if c > 0 {
                line.push_str("  ");
            }
            if numeric {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else if c + 1 < N {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub async fn status(remote: &Remote, id: u64, as_json: bool) -> Result<()> {
    let r = remote.get(&format!("/v1/batches/{id}")).send().await?;
    let reply: Value = check(r).await?.json().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let c = &reply["counts"];
    let name = reply["name"].as_str().map_or(String::new(), |n| {
        format!(" {:?}", crate::summary::plain(n))
    });
    println!(
        "batch {id}{name}: {}, {} jobs: {} done, {} failed, {} cancelled, {} running, {} queued",
        reply["state"].as_str().unwrap_or(""),
        reply["jobs"],
        c["done"],
        c["failed"],
        c["cancelled"],
        c["running"],
        c["queued"]
    );
    println!(
        "submitted {} by {}",
        reply["submitted"].as_str().unwrap_or(""),
        crate::summary::plain(reply["owner"].as_str().unwrap_or(""))
    );
    match &reply["summary"] {
        Value::Object(_) => print!("{}", crate::summary::render(&reply["summary"])),
        _ => println!(
            "elapsed {:.1}s, eta {:.1}s",
            reply["elapsed_seconds"].as_f64().unwrap_or(0.0),
            reply["eta_seconds"].as_f64().unwrap_or(0.0)
        ),
    }
    Ok(())
}

pub async fn cancel(remote: &Remote, id: u64) -> Result<()> {
    let r = remote
        .auth(reqwest::Client::new().delete(remote.url(&format!("/v1/batches/{id}"))))
        .send()
        .await?;
    let reply: Value = check(r).await?.json().await?;
    println!(
        "batch {id}: {}",
        reply["state"].as_str().unwrap_or("cancelling")
    );
    Ok(())
}

/// Follows a batch's event stream with a progress bar, then prints its summary and
/// returns it.
pub async fn watch(remote: &Remote, id: u64) -> Result<Value> {
    let r = remote
        .get(&format!("/v1/batches/{id}/events"))
        .send()
        .await?;
    let mut body = check(r).await?.bytes_stream();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} jobs {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = if k.trim() == "done" {
                        "done"
                    } else if k.trim() == "error" {
                        "error"
                    } else {
                        "progress"
                    };
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            if kind == "error" {
                bar.abandon();
                bail!(
                    "{}",
                    v["error"]["message"]
                        .as_str()
                        .unwrap_or("the event stream failed")
                );
            }
            let c = &v["counts"];
            let ended = c["done"].as_u64().unwrap_or(0)
                + c["failed"].as_u64().unwrap_or(0)
                + c["cancelled"].as_u64().unwrap_or(0);
            bar.set_length(v["jobs"].as_u64().unwrap_or(0));
            bar.set_position(ended);
            bar.set_message(format!("({} failed)", c["failed"]));
            if kind == "done" {
                bar.finish();
                println!("batch {id} {}", v["state"].as_str().unwrap_or("done"));
                print!("{}", crate::summary::render(&v["summary"]));
                return Ok(v["summary"].clone());
            }
        }
    }
    bar.abandon();
    bail!("the event stream ended before batch {id} finished")
}

pub async fn download(
    remote: &Remote,
    id: u64,
    table: &str,
    format: &str,
    out: &std::path::Path,
    symbol: Option<&str>,
    params: Option<&str>,
) -> Result<()> {
    let mut query = vec![("format", format)];
    query.extend(symbol.map(|s| ("symbol", s)));
    query.extend(params.map(|p| ("params", p)));
    let r = remote
        .get(&format!("/v1/batches/{id}/results/{table}"))
        .query(&query)
        .send()
        .await?;
    let mut body = check(r).await?.bytes_stream();
    let tmp = out.with_extension("part");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut bytes = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        file.write_all(&chunk)?;
    }
    file.flush()?;
    drop(file);
    std::fs::rename(&tmp, out)?;
    println!(
        "{table} of batch {id}: {bytes} bytes written to {}",
        out.display()
    );
    Ok(())
}

/// `xt token`: mints a token from the service's secret.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[arg(long)]
    pub tenant: String,
    /// viewer, researcher or admin.
    #[arg(long)]
    pub role: String,
    /// The user the token names.
    #[arg(long, default_value = "operator")]
    pub sub: String,
    /// Lifetime in hours.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// The HS256 secret's file (`XT_JWT_SECRET` wins when set).
    #[arg(long, env = "XT_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

pub fn token(args: &TokenArgs) -> Result<String> {
    let role = Role::parse(&args.role)
        .with_context(|| format!("--role {:?}: one of viewer, researcher, admin", args.role))?;
    if args.tenant.is_empty() {
        bail!("--tenant must not be empty");
    }
    let secret = secret(args.jwt_secret_file.as_deref())?;
    mint(&secret, &args.sub, &args.tenant, &[role], args.hours * 3600)
}

/// `xt serve`: the HTTP API in front of a coordinator.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The coordinator's URL.
    #[arg(long, env = "XT_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Address of the HTTP API.
    #[arg(long, env = "XT_LISTEN_HTTP", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address of the Arrow Flight service for programs (none when omitted).
    #[arg(long, env = "XT_LISTEN_FLIGHT")]
    pub flight_listen: Option<String>,
    /// The HS256 secret's file (`XT_JWT_SECRET` wins when set).
    #[arg(long, env = "XT_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Verify RS256 tokens with this PEM public key instead of an HS256 secret.
    #[arg(long, env = "XT_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// A file holding the cluster secret the coordinator checks on every call.
    #[arg(long, env = "XT_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The distributed mode: etcd's client URLs (comma-separated), where the leading
    /// coordinator is found; `--coordinator` is then unused.
    #[arg(long, env = "XT_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Mutual TLS to the coordinator: the cluster CA's certificate, and this process's
    /// certificate and key (PEM). All three or none.
    #[arg(long, env = "XT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "XT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "XT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How far the clocks of token issuers and this service may disagree on `exp` and `nbf`.
    #[arg(long, env = "XT_JWT_LEEWAY_SECS", default_value_t = crate::auth::DEFAULT_LEEWAY_SECS)]
    pub jwt_leeway_secs: u64,
}

pub async fn serve(args: &ServeArgs) -> Result<()> {
    xt_wire::tls::install_from_flags(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    let verifier = match &args.jwt_public_key {
        Some(pem) => Verifier::rs256(
            &std::fs::read(pem).with_context(|| format!("--jwt-public-key {}", pem.display()))?,
        )?,
        None => Verifier::hs256(&secret(args.jwt_secret_file.as_deref())?)?,
    }
    .with_leeway(args.jwt_leeway_secs);
    let channel = xt_wire::transport::endpoint(&args.coordinator)
        .with_context(|| format!("--coordinator {}", args.coordinator))?
        .connect_timeout(Duration::from_secs(5))
        // Connects on first use: the API starts (and answers /healthz) before the
        // coordinator does; /readyz says when it can serve.
        .connect_lazy();
    let secret = xt_wire::auth::ClusterSecret::from_file(args.cluster_secret_file.as_deref())?;
    let channel = if args.etcd.is_empty() {
        xt_wire::auth::with_secret(channel, secret)
    } else {
        xt_wire::leader::follow(&args.etcd, secret).await?
    };
    let app = crate::serve::App::new(channel.clone(), verifier);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Some(addr) = &args.flight_listen {
        let flight = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--flight-listen {addr}"))?;
        println!("flight on {}", flight.local_addr()?);
        let proxy = crate::flight::FlightProxy::new(channel, app.verifier.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(proxy.service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(flight)),
        );
    }
    std::io::stdout().flush()?;
    crate::serve::serve_http(app, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_and_escape_nothing_themselves() {
        let rows = [
            ["id", "state", "name"].map(String::from),
            ["7", "done", "macd"].map(String::from),
            ["12345", "running", "a much longer name"].map(String::from),
        ];
        assert_eq!(
            super::columns(&rows),
            "id     state    name\n    7  done     macd\n12345  running  a much longer name\n"
        );
    }
}
