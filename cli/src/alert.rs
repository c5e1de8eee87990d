//! `collective alert add|list|remove|history`: alert rules on the board's statistics.

use clap::Subcommand;
use collective_proto::v1 as pb;
use collective_proto::v1::alerts_client::AlertsClient;

use super::client::Client;
use super::output::{print, Format};

/// Alert rules, decided inside the log every second.
#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// Add or replace a rule: `alert add support-queue --statistic workgroup.queued --workgroup
    /// Support --above 5 --for-s 30`.
    Add {
        /// The rule's name.
        name: String,
        /// workgroup.logged_on|ready|available|on_phone|reserved|queued|longest_wait_ms, or
        /// site.lease (1 while the site holds a lease) or site.backlog (messages waiting).
        #[arg(long)]
        statistic: String,
        /// The workgroup, for workgroup.* statistics.
        #[arg(long, default_value = "")]
        workgroup: String,
        /// The site, for site.* statistics.
        #[arg(long, default_value_t = 0)]
        site: u32,
        /// Raise while the value is above this.
        #[arg(long, conflicts_with = "below", required_unless_present = "below")]
        above: Option<u64>,
        /// Raise while the value is below this.
        #[arg(long)]
        below: Option<u64>,
        /// Seconds the condition must hold before the alert is raised.
        #[arg(long, default_value_t = 0)]
        for_s: u64,
        /// An http(s) URL the leader POSTs each raised and cleared alert to (JSON, retried until
        /// 2xx; `event_id` and the Idempotency-Key header let the receiver drop repeats).
        #[arg(long, default_value = "")]
        webhook: String,
    },
    /// Every rule, raised or not, with the statistic's value at its last change.
    List,
    /// Remove a rule.
    Remove {
        /// The rule's name.
        name: String,
    },
    /// The newest raised and cleared alerts.
    History {
        /// How many (default: all kept, up to 1,000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

/// `collective alert …`.
pub async fn alert(client: &Client, command: AlertCommand, format: Format, serializable: bool) -> anyhow::Result<()> {
    let ac = |c| AlertsClient::new(c);
    match command {
        AlertCommand::Add { name, statistic, workgroup, site, above, below, for_s, webhook } => {
            let (comparison, threshold) = match (above, below) {
                (Some(threshold), None) => ("above", threshold),
                (None, Some(threshold)) => ("below", threshold),
                _ => anyhow::bail!("give one of --above or --below"),
            };
            let for_ms = for_s.checked_mul(1_000).ok_or_else(|| anyhow::anyhow!("--for-s {for_s} is too long"))?;
            let comparison = comparison.into();
            let rule = pb::AlertRule { name, statistic, workgroup, site, comparison, threshold, for_ms, webhook };
            let response = client
                .call(|c| {
                    let r = rule.clone();
                    async move { ac(c).put_rule(r).await }
                })
                .await?
                .into_inner();
            match format {
                Format::Json => print(format, &response, None),
                Format::Table => crate::outln!("alert rule {} set at revision {}", rule.name, response.revision),
            }
        }
        AlertCommand::List => {
            let request = pb::ListAlertRulesRequest { serializable };
            let response = client.call(|c| async move { ac(c).list_rules(request).await }).await?.into_inner();
            print(format, &response, Some("rules"));
        }
        AlertCommand::Remove { name } => {
            let request = pb::RemoveAlertRuleRequest { name };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { ac(c).remove_rule(r).await }
                })
                .await?
                .into_inner();
            match format {
                Format::Json => print(format, &response, None),
                Format::Table => crate::outln!("alert rule {} removed at revision {}", request.name, response.revision),
            }
        }
        AlertCommand::History { limit } => {
            let request = pb::AlertHistoryRequest { serializable, limit };
            let response = client.call(|c| async move { ac(c).history(request).await }).await?.into_inner();
            print(format, &response, Some("records"));
        }
    }
    Ok(())
}
