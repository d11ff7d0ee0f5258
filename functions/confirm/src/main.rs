//! confirm: confirm queue → per cluster, one look at its Flux objects → a commit status
//! per cluster on GitLab → the next look after a delay, or the end (success, failed,
//! superseded, timed out), with CloudWatch metrics as Embedded Metric Format lines.

use aws_lambda_events::event::sqs::SqsEvent;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::lambda::{ConfirmFunction, init_tracing};
use fluxrelay_adapters::lambda_aws;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// One invocation at a time per execution environment (see the dispatch function).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let aws = lambda_aws::from_process_env()?;
    let function = ConfirmFunction::from_env(&aws, KubeClusters::for_lambda(&aws)?).await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        function.handle(event)
    }))
    .await
}
