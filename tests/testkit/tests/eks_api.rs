//! The EKS API stand-in answers the real aws-sdk-eks client as EKS does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxrelay_testkit::eks_api::EksApi;

#[tokio::test]
async fn describe_cluster_gives_the_endpoint_and_an_unknown_name_is_resource_not_found() {
    let api = EksApi::start(&[("prod", "https://127.0.0.1:6443")]).await;
    let client = aws_sdk_eks::Client::new(&api.sdk_config().await);

    let described = client.describe_cluster().name("prod").send().await.unwrap();
    let cluster = described.cluster().unwrap();
    assert_eq!(cluster.name(), Some("prod"));
    assert_eq!(cluster.endpoint(), Some("https://127.0.0.1:6443"));

    let error = client
        .describe_cluster()
        .name("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{error:?}"
    );
    assert_eq!(api.asked(), ["prod", "nope"]);
}
