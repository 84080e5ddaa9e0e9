//! Each command as its API call, and how its answer is shown.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::args::{Command, HttpEndpoint, HttpTokens, Images, Instances, KeyPairs, RunArgs};
use super::args::{SecurityGroups, Subnets};
use super::error::CliError;
use super::http::{encode, Client, Reply};
use super::views;

/// How a document is shown as a table.
pub type View = fn(&Value) -> String;

/// What a command got, for the output to show.
#[derive(Debug)]
pub enum Outcome {
    /// A JSON document: `view` makes its table; `--output json` prints
    /// the body itself.
    Document { reply: Reply, view: View },
    /// Text the API serves as it is (PEM, Prometheus): printed unchanged
    /// whatever the output format.
    Raw(String),
    /// A 204: a confirmation line for people, nothing for JSON.
    Done(String),
}

/// Runs `command` against the agent.
pub async fn execute(client: &Client, command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Images(c) => images(client, c).await,
        Command::Subnets(c) => subnets(client, c).await,
        Command::KeyPairs(c) => key_pairs(client, c).await,
        Command::SecurityGroups(c) => security_groups(client, c).await,
        Command::Instances(c) => instances(client, c).await,
        Command::Health => get(client, "/v1/health".into(), views::health).await,
        Command::IdentityCertificate => raw(client, "/v1/identity-certificate").await,
        Command::Metrics => raw(client, "/metrics").await,
    }
}

async fn get(client: &Client, path: String, view: View) -> Result<Outcome, CliError> {
    send(client, Method::GET, path, None, view).await
}

async fn send(
    client: &Client,
    method: Method,
    path: String,
    body: Option<Value>,
    view: View,
) -> Result<Outcome, CliError> {
    let reply = client.call(method, &path, body.as_ref()).await?;
    Ok(Outcome::Document { reply, view })
}

async fn done(
    client: &Client,
    method: Method,
    path: String,
    message: String,
) -> Result<Outcome, CliError> {
    client.call(method, &path, None).await?;
    Ok(Outcome::Done(message))
}

async fn raw(client: &Client, path: &str) -> Result<Outcome, CliError> {
    Ok(Outcome::Raw(
        client.call(Method::GET, path, None).await?.body,
    ))
}

async fn images(client: &Client, c: Images) -> Result<Outcome, CliError> {
    match c {
        Images::Register {
            manifest_path,
            name,
        } => {
            // The agent wants an absolute path (it has another working
            // directory); the path is on the agent's host, which with the
            // default endpoint is this one.
            let absolute =
                std::path::absolute(&manifest_path).map_err(|source| CliError::ReadFile {
                    path: manifest_path.clone(),
                    source,
                })?;
            let Some(path) = absolute.to_str() else {
                return Err(CliError::Usage(format!(
                    "manifest path {} is not UTF-8",
                    absolute.display()
                )));
            };
            let mut body = json!({ "manifest_path": path });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let path = "/v1/images".into();
            send(client, Method::POST, path, Some(body), views::image).await
        }
        Images::List => get(client, "/v1/images".into(), views::images).await,
        Images::Describe { image_id } => get(client, image_path(&image_id), views::image).await,
        Images::Deregister { image_id } => {
            let message = format!("deregistered {image_id}");
            done(client, Method::DELETE, image_path(&image_id), message).await
        }
    }
}

fn image_path(id: &str) -> String {
    format!("/v1/images/{}", encode(id))
}

async fn subnets(client: &Client, c: Subnets) -> Result<Outcome, CliError> {
    match c {
        Subnets::Create { cidr_block } => {
            let body = json!({ "cidr_block": cidr_block });
            let path = "/v1/subnets".into();
            send(client, Method::POST, path, Some(body), views::subnet).await
        }
        Subnets::List => get(client, "/v1/subnets".into(), views::subnets).await,
        Subnets::Describe { subnet_id } => {
            get(client, subnet_path(&subnet_id), views::subnet).await
        }
        Subnets::Delete { subnet_id } => {
            let message = format!("deleted {subnet_id}");
            done(client, Method::DELETE, subnet_path(&subnet_id), message).await
        }
    }
}

fn subnet_path(id: &str) -> String {
    format!("/v1/subnets/{}", encode(id))
}

async fn key_pairs(client: &Client, c: KeyPairs) -> Result<Outcome, CliError> {
    match c {
        KeyPairs::Import {
            key_name,
            public_key_file,
        } => {
            let key = read_text(&public_key_file)?;
            let body = json!({ "key_name": key_name, "public_key_material": key.trim() });
            let path = "/v1/key-pairs".into();
            send(client, Method::POST, path, Some(body), views::key_pair).await
        }
        KeyPairs::List => get(client, "/v1/key-pairs".into(), views::key_pairs).await,
        KeyPairs::Describe { key_name } => {
            get(client, key_pair_path(&key_name), views::key_pair).await
        }
        KeyPairs::Delete { key_name } => {
            let message = format!("deleted key pair {key_name}");
            done(client, Method::DELETE, key_pair_path(&key_name), message).await
        }
    }
}

fn key_pair_path(name: &str) -> String {
    format!("/v1/key-pairs/{}", encode(name))
}

async fn security_groups(client: &Client, c: SecurityGroups) -> Result<Outcome, CliError> {
    let (action, args) = match c {
        SecurityGroups::Create {
            group_name,
            description,
        } => {
            let body = json!({ "group_name": group_name, "description": description });
            let path = "/v1/security-groups".into();
            return send(
                client,
                Method::POST,
                path,
                Some(body),
                views::security_group,
            )
            .await;
        }
        SecurityGroups::List => {
            let path = "/v1/security-groups".into();
            return get(client, path, views::security_groups).await;
        }
        SecurityGroups::Describe { group_id } => {
            return get(client, group_path(&group_id), views::security_group).await;
        }
        SecurityGroups::Delete { group_id } => {
            let message = format!("deleted {group_id}");
            return done(client, Method::DELETE, group_path(&group_id), message).await;
        }
        SecurityGroups::AuthorizeIngress(a) => ("authorize-ingress", a),
        SecurityGroups::RevokeIngress(a) => ("revoke-ingress", a),
        SecurityGroups::AuthorizeEgress(a) => ("authorize-egress", a),
        SecurityGroups::RevokeEgress(a) => ("revoke-egress", a),
    };
    let body = json!({ "ip_permissions": args.rule.to_permissions()? });
    let path = format!("{}/{action}", group_path(&args.group_id));
    send(
        client,
        Method::POST,
        path,
        Some(body),
        views::security_group,
    )
    .await
}

fn group_path(id: &str) -> String {
    format!("/v1/security-groups/{}", encode(id))
}

async fn instances(client: &Client, c: Instances) -> Result<Outcome, CliError> {
    match c {
        Instances::Run(run) => {
            let body = run_body(*run)?;
            let path = "/v1/instances".into();
            send(client, Method::POST, path, Some(body), views::instances).await
        }
        Instances::List {
            state,
            tag,
            subnet_id,
        } => {
            let query: Vec<String> = [
                state.map(|s| ("state", s)),
                tag.map(|(k, v)| ("tag", format!("{k}={v}"))),
                subnet_id.map(|s| ("subnet_id", s)),
            ]
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", encode(&v)))
            .collect();
            let path = if query.is_empty() {
                "/v1/instances".to_string()
            } else {
                format!("/v1/instances?{}", query.join("&"))
            };
            get(client, path, views::instances).await
        }
        Instances::Describe { instance_id } => {
            get(client, instance_path(&instance_id), views::instance).await
        }
        Instances::Stop { instance_id } => action(client, &instance_id, "stop").await,
        Instances::Start { instance_id } => action(client, &instance_id, "start").await,
        Instances::Reboot { instance_id } => {
            let path = format!("{}/reboot", instance_path(&instance_id));
            let message = format!("rebooting {instance_id}");
            done(client, Method::POST, path, message).await
        }
        Instances::Terminate { instance_id } => {
            let path = format!("{}/terminate", instance_path(&instance_id));
            send(client, Method::POST, path, None, views::terminated).await
        }
        Instances::Console { instance_id, bytes } => {
            let mut path = format!("{}/console", instance_path(&instance_id));
            if let Some(n) = bytes {
                path.push_str(&format!("?bytes={n}"));
            }
            get(client, path, views::console).await
        }
        Instances::ModifySecurityGroups {
            instance_id,
            security_group_ids,
        } => {
            let path = format!("{}/security-groups", instance_path(&instance_id));
            let body = json!({ "security_group_ids": security_group_ids });
            send(client, Method::PUT, path, Some(body), views::instance_row).await
        }
    }
}

async fn action(client: &Client, id: &str, what: &str) -> Result<Outcome, CliError> {
    let path = format!("{}/{what}", instance_path(id));
    send(client, Method::POST, path, None, views::instance_row).await
}

fn instance_path(id: &str) -> String {
    format!("/v1/instances/{}", encode(id))
}

/// The body of `POST /v1/instances`; what is not given is left to the
/// agent's defaults.
fn run_body(run: RunArgs) -> Result<Value, CliError> {
    let mut body = Map::new();
    body.insert("image_id".into(), json!(run.image_id));
    body.insert("instance_type".into(), json!(run.instance_type));
    body.insert("subnet_id".into(), json!(run.subnet_id));
    if !run.security_group_ids.is_empty() {
        body.insert("security_group_ids".into(), json!(run.security_group_ids));
    }
    let optional = [
        ("private_ip_address", run.private_ip.map(Value::from)),
        ("key_name", run.key_name.map(Value::from)),
        ("count", run.count.map(Value::from)),
        ("client_token", run.client_token.map(Value::from)),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    if let Some(path) = &run.user_data_file {
        let bytes = std::fs::read(path).map_err(|source| CliError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        body.insert("user_data".into(), json!(encoded));
    }
    if !run.tags.is_empty() {
        let mut tags = BTreeMap::new();
        for (k, v) in run.tags {
            if tags.contains_key(&k) {
                return Err(CliError::Usage(format!("--tag {k}=… is given twice")));
            }
            tags.insert(k, v);
        }
        body.insert("tags".into(), json!(tags));
    }
    let mut options = Map::new();
    if let Some(t) = run.http_tokens {
        let t = match t {
            HttpTokens::Required => "required",
            HttpTokens::Optional => "optional",
        };
        options.insert("http_tokens".into(), json!(t));
    }
    if let Some(e) = run.http_endpoint {
        let e = match e {
            HttpEndpoint::Enabled => "enabled",
            HttpEndpoint::Disabled => "disabled",
        };
        options.insert("http_endpoint".into(), json!(e));
    }
    if let Some(h) = run.hop_limit {
        options.insert("http_put_response_hop_limit".into(), json!(h));
    }
    if !options.is_empty() {
        body.insert("metadata_options".into(), Value::Object(options));
    }
    Ok(Value::Object(body))
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RunArgs {
        let base = [
            "stratus",
            "instances",
            "run",
            "--image-id",
            "ami-1",
            "--instance-type",
            "t3.micro",
            "--subnet-id",
            "subnet-1",
        ];
        let args = super::super::args::Args::try_parse_from(base.iter().chain(extra)).unwrap();
        match args.command {
            Command::Instances(Instances::Run(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_sends_only_what_was_given() {
        assert_eq!(
            run_body(run_args(&[])).unwrap(),
            json!({"image_id": "ami-1", "instance_type": "t3.micro", "subnet_id": "subnet-1"})
        );
        let file = std::env::temp_dir().join(format!("stratus-cli-ud-{}", std::process::id()));
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        let body = run_body(run_args(&[
            "--security-group-ids",
            "sg-a,sg-b",
            "--private-ip",
            "10.0.0.9",
            "--key-name",
            "ops",
            "--user-data-file",
            file.to_str().unwrap(),
            "--tag",
            "Name=web",
            "--count",
            "1",
            "--client-token",
            "t1",
            "--http-tokens",
            "required",
            "--hop-limit",
            "2",
        ]))
        .unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            body,
            json!({"image_id": "ami-1", "instance_type": "t3.micro", "subnet_id": "subnet-1",
                "security_group_ids": ["sg-a", "sg-b"], "private_ip_address": "10.0.0.9",
                "key_name": "ops", "user_data": "IyEvYmluL3NoCmVjaG8gaGkK",
                "tags": {"Name": "web"}, "count": 1, "client_token": "t1",
                "metadata_options": {"http_tokens": "required", "http_put_response_hop_limit": 2}})
        );
        let e = run_body(run_args(&["--tag", "a=1", "--tag", "a=2"])).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
        let e = run_body(run_args(&["--user-data-file", "/nonexistent/ud"])).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/ud: "), "{e}");
    }
}
