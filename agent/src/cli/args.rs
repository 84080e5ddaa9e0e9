//! The command line: `stratus [global flags] <group> <command> [args]`,
//! one group per kind of resource and a command per API route, named as
//! the EC2 CLI names them where it has a name.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::rules::RuleFlags;

/// Where `--help` lists the flags every command takes, apart from the
/// command's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(
    name = "stratus",
    version,
    about = "Command-line client of the Stratus agent's API",
    after_help = "Environment: STRATUS_ENDPOINT (default endpoint), STRATUS_TOKEN (bearer token)."
)]
pub struct Args {
    /// The agent's API [default: $STRATUS_ENDPOINT, else http://127.0.0.1:8470].
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub endpoint: Option<String>,
    /// File holding the bearer token [default: $STRATUS_TOKEN, else
    /// /var/lib/stratus/api-token if readable].
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub token_file: Option<PathBuf>,
    /// How to print answers: aligned tables, or the API's JSON.
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value_t = Output::Table,
        help_heading = GLOBAL
    )]
    pub output: Output,
    /// Seconds to wait for the agent's answer.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = 120,
        help_heading = GLOBAL,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// AMI bundles on the agent's host.
    #[command(subcommand)]
    Images(Images),
    /// IPv4 subnets, each on a bridge of its own.
    #[command(subcommand)]
    Subnets(Subnets),
    /// Imported SSH public keys.
    #[command(subcommand)]
    KeyPairs(KeyPairs),
    /// Security groups and their rules.
    #[command(subcommand)]
    SecurityGroups(SecurityGroups),
    /// Instances: run, inspect, stop, start, reboot, terminate.
    #[command(subcommand)]
    Instances(Instances),
    /// The host's summary and every instance's status checks.
    Health,
    /// The certificate (PEM) of the key that signs identity documents.
    IdentityCertificate,
    /// The agent's Prometheus metrics, as text.
    Metrics,
}

#[derive(Debug, Subcommand)]
pub enum Images {
    /// Register a bundle by its manifest (a path on the agent's host;
    /// made absolute here if relative).
    Register {
        manifest_path: PathBuf,
        /// A name of its own (default: the manifest's).
        #[arg(long)]
        name: Option<String>,
    },
    /// List registered images.
    List,
    /// Show one image.
    Describe {
        /// ami-…
        image_id: String,
    },
    /// Forget an image (refused while an instance uses it).
    Deregister {
        /// ami-…
        image_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Subnets {
    /// Create a subnet (/16 to /28).
    Create { cidr_block: String },
    /// List subnets.
    List,
    /// Show one subnet.
    Describe {
        /// subnet-…
        subnet_id: String,
    },
    /// Delete a subnet and its bridge (refused while it has instances).
    Delete {
        /// subnet-…
        subnet_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyPairs {
    /// Import an OpenSSH public key under a name.
    Import {
        /// A name of your choosing (unique on the host).
        key_name: String,
        /// The public key file (one `TYPE BASE64 [COMMENT]` line).
        #[arg(long, value_name = "FILE")]
        public_key_file: PathBuf,
    },
    /// List key pairs.
    List,
    /// Show one key pair.
    Describe { key_name: String },
    /// Delete a key pair.
    Delete { key_name: String },
}

#[derive(Debug, Subcommand)]
pub enum SecurityGroups {
    /// Create a group (it allows all egress).
    Create {
        /// Unique on the host; may not start with sg-.
        group_name: String,
        #[arg(long, value_name = "TEXT")]
        description: String,
    },
    /// List groups with their rule counts.
    List,
    /// Show a group and its rules, one per line.
    Describe {
        /// sg-…
        group_id: String,
    },
    /// Delete a group (refused while an instance or a rule uses it).
    Delete {
        /// sg-…
        group_id: String,
    },
    /// Allow inbound traffic.
    AuthorizeIngress(RuleArgs),
    /// Remove an inbound rule (the same flags as it was authorized with).
    RevokeIngress(RuleArgs),
    /// Allow outbound traffic.
    AuthorizeEgress(RuleArgs),
    /// Remove an outbound rule.
    RevokeEgress(RuleArgs),
}

#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// The group whose rules change (sg-…).
    pub group_id: String,
    #[command(flatten)]
    pub rule: RuleFlags,
}

#[derive(Debug, Subcommand)]
pub enum Instances {
    /// Launch instances.
    Run(Box<RunArgs>),
    /// List instances, optionally filtered.
    List {
        /// pending, running, shutting-down, terminated, stopping or stopped.
        #[arg(long)]
        state: Option<String>,
        /// Only instances with this tag.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Option<(String, String)>,
        #[arg(long)]
        subnet_id: Option<String>,
    },
    /// Show one instance, field by field.
    Describe { instance_id: String },
    /// Stop an instance (ACPI power button; killed after 60 s).
    Stop { instance_id: String },
    /// Start a stopped instance.
    Start { instance_id: String },
    /// Reboot a running instance (Ctrl-Alt-Del).
    Reboot { instance_id: String },
    /// Terminate an instance: its tap, disk and address are released.
    Terminate { instance_id: String },
    /// Print the last bytes of the serial console, as they are.
    Console {
        instance_id: String,
        /// How many bytes from the end (the agent's default: 64 KiB).
        #[arg(long, value_name = "N")]
        bytes: Option<usize>,
    },
    /// Give the instance exactly these groups.
    ModifySecurityGroups {
        instance_id: String,
        /// Comma-separated group ids.
        #[arg(value_name = "SG,SG…", value_delimiter = ',', required = true)]
        security_group_ids: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long)]
    pub image_id: String,
    /// t3.micro, m5.large, …
    #[arg(long)]
    pub instance_type: String,
    #[arg(long)]
    pub subnet_id: String,
    /// Comma-separated group ids.
    #[arg(long, value_name = "SG,SG…", value_delimiter = ',')]
    pub security_group_ids: Vec<String>,
    #[arg(long, value_name = "IPV4")]
    pub private_ip: Option<String>,
    #[arg(long)]
    pub key_name: Option<String>,
    /// A file whose bytes become the instance's user data.
    #[arg(long, value_name = "FILE")]
    pub user_data_file: Option<PathBuf>,
    /// A tag; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// How many instances (the agent's default: 1).
    #[arg(long)]
    pub count: Option<u32>,
    /// Makes the call idempotent: the same token returns the same instances.
    #[arg(long)]
    pub client_token: Option<String>,
    /// Whether the metadata service wants IMDSv2 session tokens.
    #[arg(long, value_enum)]
    pub http_tokens: Option<HttpTokens>,
    /// Whether the metadata service answers at all.
    #[arg(long, value_enum)]
    pub http_endpoint: Option<HttpEndpoint>,
    /// The metadata service's response hop limit (1-64).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=64))]
    pub hop_limit: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpTokens {
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpEndpoint {
    Enabled,
    Disabled,
}

/// `KEY=VALUE`, the key not empty (the value may be, and may hold `=`).
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(parse_tag("Name=web"), Ok(("Name".into(), "web".into())));
        assert_eq!(parse_tag("k=a=b"), Ok(("k".into(), "a=b".into())));
        assert_eq!(parse_tag("k="), Ok(("k".into(), String::new())));
        assert!(parse_tag("=v").is_err());
        assert!(parse_tag("novalue").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        <Args as clap::CommandFactory>::command().debug_assert();
        let a = Args::try_parse_from([
            "stratus",
            "instances",
            "run",
            "--image-id",
            "ami-1",
            "--instance-type",
            "t3.micro",
            "--subnet-id",
            "subnet-1",
            "--security-group-ids",
            "sg-a,sg-b",
            "--tag",
            "Name=web",
            "--tag",
            "env=prod",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(a.output, Output::Json);
        let Command::Instances(Instances::Run(run)) = a.command else {
            panic!("{:?}", a.command)
        };
        assert_eq!(run.security_group_ids, ["sg-a", "sg-b"]);
        assert_eq!(run.tags.len(), 2);
        for bad in [
            &["stratus"][..],
            &["stratus", "images"],
            &["stratus", "images", "describe"],
            &["stratus", "instances", "list", "--tag", "x"],
            &["stratus", "--output", "yaml", "health"],
            &["stratus", "instances", "run", "--image-id", "ami-1"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
