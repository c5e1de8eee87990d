//! `collective.v1.Alerts`: alert rules on the board's statistics and the history of raised and
//! cleared alerts. The rules live in the state machine (`alert.rs`); writes need an
//! administrator (the state machine refuses sites).

use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::alerts_server::Alerts;
use collective_statemachine::alert::{AlertRule, Comparison, Statistic, ALERT_HISTORY_MAX};
use collective_statemachine::Command;
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Serves alert rules.
pub struct AlertsService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;

/// A rule from the wire; an unknown statistic or comparison is refused naming the field.
fn rule_in(rule: pb::AlertRule) -> Result<AlertRule, ApiError> {
    let statistic = Statistic::parse(&rule.statistic).ok_or_else(|| {
        let known: Vec<&str> = Statistic::ALL.iter().map(|(_, name)| *name).collect();
        ApiError::invalid("rule.statistic", format!("{:?} is not one of {}", rule.statistic, known.join(", ")))
    })?;
    let comparison = match rule.comparison.as_str() {
        "above" => Comparison::Above,
        "below" => Comparison::Below,
        other => return Err(ApiError::invalid("rule.comparison", format!("{other:?} is not above or below"))),
    };
    Ok(AlertRule {
        name: rule.name,
        statistic,
        workgroup: rule.workgroup,
        site: rule.site,
        comparison,
        threshold: rule.threshold,
        for_ms: rule.for_ms,
        webhook: rule.webhook,
    })
}

/// A rule on the wire.
pub fn rule_out(rule: &AlertRule) -> pb::AlertRule {
    pb::AlertRule {
        name: rule.name.clone(),
        statistic: rule.statistic.name().to_string(),
        workgroup: rule.workgroup.clone(),
        site: rule.site,
        comparison: match rule.comparison {
            Comparison::Above => "above",
            Comparison::Below => "below",
        }
        .to_string(),
        threshold: rule.threshold,
        for_ms: rule.for_ms,
        webhook: rule.webhook.clone(),
    }
}

/// Every rule and where it stands.
pub fn rules_out(state: &collective_statemachine::State) -> Vec<pb::AlertRuleState> {
    state
        .alerts
        .rules
        .values()
        .map(|alert| pb::AlertRuleState {
            rule: Some(rule_out(&alert.rule)),
            raised: alert.raised,
            holding_since_ms: alert.holding_since_ms.unwrap_or(0),
            value: alert.value,
        })
        .collect()
}

#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn put_rule(&self, request: Request<pb::AlertRule>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let rule = rule_in(request.into_inner())?;
        let applied = self.node.write(principal, Command::PutAlertRule(rule)).await?;
        Ok(Response::new(convert::write_response(applied)))
    }

    async fn list_rules(&self, request: Request<pb::ListAlertRulesRequest>) -> Reply<pb::ListAlertRulesResponse> {
        let response = read(&self.node, request.into_inner().serializable, |state| {
            Ok(pb::ListAlertRulesResponse { rules: rules_out(state), revision: state.revision })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn remove_rule(&self, request: Request<pb::RemoveAlertRuleRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let name = request.into_inner().name;
        let applied = self.node.write(principal, Command::RemoveAlertRule { name }).await?;
        Ok(Response::new(convert::write_response(applied)))
    }

    async fn history(&self, request: Request<pb::AlertHistoryRequest>) -> Reply<pb::AlertHistoryResponse> {
        let request = request.into_inner();
        let limit = if request.limit == 0 { ALERT_HISTORY_MAX } else { request.limit as usize };
        let response = read(&self.node, request.serializable, |state| {
            let alerts = &state.alerts;
            let history = &alerts.history;
            let records = history
                .iter()
                .skip(history.len().saturating_sub(limit))
                .map(|record| pb::AlertRecord {
                    revision: record.revision,
                    at_ms: record.at_ms,
                    name: record.name.clone(),
                    raised: record.raised,
                    value: record.value,
                    webhook: record.webhook.clone(),
                    delivered: !record.webhook.is_empty() && record.revision <= alerts.delivered_revision,
                })
                .collect();
            Ok(pb::AlertHistoryResponse { records, undelivered_dropped: alerts.undelivered_dropped })
        })
        .await?;
        Ok(Response::new(response))
    }
}
