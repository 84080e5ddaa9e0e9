//! Security-group rule flags, as the EC2 CLI's shorthand has them
//! (`--protocol tcp --port 80 --cidr 10.0.0.0/8`), turned into the API's
//! `ip_permissions`; `--ip-permissions JSON` passes EC2's structure
//! through for what the flags cannot say (several permissions at once).
//!
//! Combinations that cannot mean anything (`--port` with `--protocol
//! icmp`) are refused here as usage errors; values (a CIDR, a port past
//! 65535 in the JSON) are the agent's to check, so its messages are the
//! only ones about them.

use serde_json::Value;
use stratus_agent::model::security_group::{GroupPair, IpPermission, IpRange, Ipv6Range, Protocol};

use super::error::CliError;

/// The rule flags of `authorize-ingress` and its three siblings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuleFlags {
    /// tcp, udp, icmp, icmpv6, -1 (every protocol) or a protocol number.
    #[arg(
        long,
        value_name = "PROTOCOL",
        allow_hyphen_values = true,
        required_unless_present = "ip_permissions"
    )]
    pub protocol: Option<String>,
    /// TCP/UDP port or range: 80, or 8000-8080.
    #[arg(long, value_name = "PORT|FROM-TO")]
    pub port: Option<String>,
    /// ICMP type (default -1: any).
    #[arg(long, value_name = "TYPE", allow_hyphen_values = true)]
    pub icmp_type: Option<i32>,
    /// ICMP code (default -1: any; needs --icmp-type).
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub icmp_code: Option<i32>,
    /// IPv4 or IPv6 range the rule allows from (ingress) or to (egress);
    /// repeatable.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// A security group whose members the rule allows; repeatable.
    #[arg(long = "source-group", value_name = "GROUP_ID")]
    pub source_groups: Vec<String>,
    /// EC2's IpPermissions as JSON (a list, or one permission), instead
    /// of the flags above.
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with_all = ["protocol", "port", "icmp_type", "icmp_code", "cidrs", "source_groups"]
    )]
    pub ip_permissions: Option<String>,
}

impl RuleFlags {
    /// The request's `ip_permissions` list.
    pub fn to_permissions(&self) -> Result<Value, CliError> {
        if let Some(text) = &self.ip_permissions {
            return match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(list)) => Ok(Value::Array(list)),
                Ok(one @ Value::Object(_)) => Ok(Value::Array(vec![one])),
                Ok(_) => Err(usage(
                    "--ip-permissions: give a JSON list of permissions, or one permission object",
                )),
                Err(e) => Err(usage(format!("--ip-permissions is not JSON: {e}"))),
            };
        }
        let Some(protocol_text) = &self.protocol else {
            return Err(usage("give --protocol (or --ip-permissions)"));
        };
        let protocol =
            Protocol::parse(protocol_text).map_err(|_| {
                usage(format!("--protocol `{protocol_text}`: give tcp, udp, icmp, icmpv6, -1 or a protocol number 0-255"))
            })?;
        let icmp_flags = self.icmp_type.is_some() || self.icmp_code.is_some();
        let (from_port, to_port) = match protocol {
            Protocol::Tcp | Protocol::Udp => {
                if icmp_flags {
                    return Err(usage(
                        "--icmp-type and --icmp-code are for icmp rules; give --port",
                    ));
                }
                let Some(port) = &self.port else {
                    return Err(usage(format!(
                        "--protocol {protocol_text} needs --port PORT or --port FROM-TO"
                    )));
                };
                let (from, to) = port_range(port)?;
                (Some(from), Some(to))
            }
            Protocol::Icmp | Protocol::Icmpv6 => {
                if self.port.is_some() {
                    return Err(usage(
                        "--port is for tcp and udp rules; icmp takes --icmp-type and --icmp-code",
                    ));
                }
                if self.icmp_code.is_some() && self.icmp_type.is_none() {
                    return Err(usage("--icmp-code needs --icmp-type"));
                }
                (
                    Some(self.icmp_type.unwrap_or(-1)),
                    Some(self.icmp_code.unwrap_or(-1)),
                )
            }
            Protocol::All | Protocol::Number(_) => {
                if self.port.is_some() || icmp_flags {
                    return Err(usage(format!(
                        "--protocol {protocol_text} has no ports; drop --port, --icmp-type and --icmp-code"
                    )));
                }
                (None, None)
            }
        };
        if self.cidrs.is_empty() && self.source_groups.is_empty() {
            return Err(usage(
                "give at least one --cidr or --source-group (the traffic the rule allows)",
            ));
        }
        let (v6, v4): (Vec<&String>, Vec<&String>) =
            self.cidrs.iter().partition(|c| c.contains(':'));
        let permission = IpPermission {
            ip_protocol: protocol_text.clone(),
            from_port,
            to_port,
            ip_ranges: v4
                .into_iter()
                .map(|c| IpRange { cidr_ip: c.clone() })
                .collect(),
            ipv6_ranges: v6
                .into_iter()
                .map(|c| Ipv6Range {
                    cidr_ipv6: c.clone(),
                })
                .collect(),
            user_id_group_pairs: self
                .source_groups
                .iter()
                .map(|g| GroupPair {
                    group_id: g.clone(),
                })
                .collect(),
        };
        serde_json::to_value([permission]).map_err(|e| usage(e.to_string()))
    }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// `80` or `8000-8080`, each 0-65535, the first not above the second.
fn port_range(text: &str) -> Result<(i32, i32), CliError> {
    let bad = || {
        usage(format!(
            "--port `{text}`: give a port (80) or a range (8000-8080) within 0-65535"
        ))
    };
    let number = |s: &str| s.trim().parse::<u16>().map(i32::from).map_err(|_| bad());
    let (from, to) = match text.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let p = number(text)?;
            (p, p)
        }
    };
    if from > to {
        return Err(bad());
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    /// The flags as a user types them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        rule: RuleFlags,
    }

    fn parse(args: &[&str]) -> Result<Value, String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| format!("clap: {:?}", e.kind()))?;
        cli.rule.to_permissions().map_err(|e| e.to_string())
    }

    #[test]
    fn ports_cidrs_and_groups() {
        assert_eq!(
            parse(&["--protocol", "tcp", "--port", "80", "--cidr", "10.0.0.0/8"]).unwrap(),
            json!([{"ip_protocol": "tcp", "from_port": 80, "to_port": 80,
                    "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}], "ipv6_ranges": [],
                    "user_id_group_pairs": []}])
        );
        let v = parse(&[
            "--protocol",
            "udp",
            "--port",
            "8000-8080",
            "--cidr",
            "10.0.0.0/8",
            "--cidr",
            "2001:db8::/32",
            "--source-group",
            "sg-0123456789abcdef0",
        ])
        .unwrap();
        assert_eq!(v[0]["from_port"], 8000);
        assert_eq!(v[0]["to_port"], 8080);
        assert_eq!(v[0]["ip_ranges"], json!([{"cidr_ip": "10.0.0.0/8"}]));
        assert_eq!(v[0]["ipv6_ranges"], json!([{"cidr_ipv6": "2001:db8::/32"}]));
        assert_eq!(
            v[0]["user_id_group_pairs"],
            json!([{"group_id": "sg-0123456789abcdef0"}])
        );
    }

    #[test]
    fn icmp_and_all_protocols() {
        let v = parse(&["--protocol", "icmp", "--cidr", "0.0.0.0/0"]).unwrap();
        assert_eq!(
            (v[0]["from_port"].clone(), v[0]["to_port"].clone()),
            (json!(-1), json!(-1))
        );
        let v = parse(&[
            "--protocol",
            "icmp",
            "--icmp-type",
            "8",
            "--icmp-code",
            "0",
            "--cidr",
            "0.0.0.0/0",
        ])
        .unwrap();
        assert_eq!(
            (v[0]["from_port"].clone(), v[0]["to_port"].clone()),
            (json!(8), json!(0))
        );
        let v = parse(&["--protocol", "-1", "--source-group", "sg-1"]).unwrap();
        assert_eq!(v[0]["ip_protocol"], "-1");
        assert!(v[0].get("from_port").is_none(), "{v}");
    }

    #[test]
    fn the_json_escape_hatch() {
        let one = r#"{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}]}"#;
        let v = parse(&["--ip-permissions", one]).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(1));
        assert_eq!(v[0]["from_port"], 22);
        let list = format!("[{one}, {one}]");
        assert_eq!(
            parse(&["--ip-permissions", &list])
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(parse(&["--ip-permissions", "{nope"])
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse(&["--ip-permissions", "3"]).is_err());
        // Not with the flags it replaces.
        assert_eq!(
            parse(&["--ip-permissions", one, "--port", "22"]).unwrap_err(),
            "clap: ArgumentConflict"
        );
    }

    #[test]
    fn meaningless_combinations_are_refused() {
        for (args, says) in [
            (
                &["--protocol", "tcp", "--cidr", "0.0.0.0/0"][..],
                "needs --port",
            ),
            (
                &["--protocol", "tcp", "--port", "80"],
                "at least one --cidr",
            ),
            (
                &[
                    "--protocol",
                    "tcp",
                    "--port",
                    "90-80",
                    "--cidr",
                    "0.0.0.0/0",
                ],
                "--port `90-80`",
            ),
            (
                &[
                    "--protocol",
                    "tcp",
                    "--port",
                    "65536",
                    "--cidr",
                    "0.0.0.0/0",
                ],
                "within 0-65535",
            ),
            (
                &["--protocol", "tcp", "--port", "http", "--cidr", "0.0.0.0/0"],
                "--port `http`",
            ),
            (
                &[
                    "--protocol",
                    "tcp",
                    "--port",
                    "1",
                    "--icmp-type",
                    "8",
                    "--cidr",
                    "0.0.0.0/0",
                ],
                "for icmp rules",
            ),
            (
                &["--protocol", "icmp", "--port", "8", "--cidr", "0.0.0.0/0"],
                "for tcp and udp",
            ),
            (
                &[
                    "--protocol",
                    "icmp",
                    "--icmp-code",
                    "0",
                    "--cidr",
                    "0.0.0.0/0",
                ],
                "needs --icmp-type",
            ),
            (
                &["--protocol", "-1", "--port", "80", "--cidr", "0.0.0.0/0"],
                "has no ports",
            ),
            (
                &["--protocol", "gre", "--cidr", "0.0.0.0/0"],
                "--protocol `gre`",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
        assert_eq!(
            parse(&["--cidr", "0.0.0.0/0"]).unwrap_err(),
            "clap: MissingRequiredArgument"
        );
    }
}
