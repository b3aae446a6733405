//! The tenant's server workload: Deployment, Service, data PVC and optional Ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{
    labels, owned_meta, selector, sync_secret_path, Bound, Names, RenderError, CONFIG_DIR,
    CONFIG_KEY, DATA_DIR, SERVER_PORT,
};
use crate::crd::{DeletionPolicy, Tenant};

/// UID/GID the server runs as (non-root).
pub const RUN_AS: i64 = 65532;

fn probe(path: &str, initial: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("https".into()),
            scheme: Some("HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn secret_projection(name: &str, items: Vec<(&str, String)>) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection {
            name: name.to_string(),
            items: Some(
                items
                    .into_iter()
                    .map(|(key, path)| KeyToPath {
                        key: key.to_string(),
                        path,
                        mode: None,
                    })
                    .collect(),
            ),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    }
}

/// The projected volume at `/etc/pbs-cloud`: config, certificate, each S3 datastore's secret
/// key and CA bundle, and each bound SyncJob's password or token secret (mode 0400: the kubelet
/// adds group read for the pod's `fsGroup`, the server's group, and nothing for others).
/// Mounted read-only and without `subPath` so updates reach the running server, which reloads
/// the config file on change and reads a sync secret at each run.
fn config_volume(tenant: &Tenant, bound: &Bound) -> Volume {
    let names = Names::of(tenant);
    let mut sources = vec![
        secret_projection(&names.config, vec![(CONFIG_KEY, CONFIG_KEY.to_string())]),
        secret_projection(
            &names.tls,
            vec![
                ("tls.crt", "tls/tls.crt".to_string()),
                ("tls.key", "tls/tls.key".to_string()),
            ],
        ),
    ];
    for ds in &bound.datastores {
        let Some(s3) = &ds.spec.s3 else { continue };
        let obj = ds.name_any();
        if let Some(c) = &s3.credentials_secret {
            sources.push(secret_projection(
                &c.name,
                vec![(
                    c.secret_access_key_key.as_str(),
                    format!("s3/{obj}/secret-access-key"),
                )],
            ));
        }
        if let Some(ca) = &s3.ca_bundle {
            sources.push(secret_projection(
                &ca.secret_name,
                vec![(ca.key.as_str(), format!("s3/{obj}/ca.crt"))],
            ));
        }
    }
    for job in &bound.sync_jobs {
        let r = &job.spec.remote.secret_ref;
        let mut p = secret_projection(
            &r.name,
            vec![(r.key.as_str(), sync_secret_path(&job.name_any()))],
        );
        if let Some(items) = p.secret.as_mut().and_then(|s| s.items.as_mut()) {
            items.iter_mut().for_each(|i| i.mode = Some(0o400));
        }
        sources.push(p);
    }
    Volume {
        name: "config".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
        }),
        ..Volume::default()
    }
}

/// The server Deployment: one replica, Recreate (a datastore has one writer), probes on
/// `/readyz` and `/healthz`, non-root with a read-only root filesystem.
pub fn deployment(tenant: &Tenant, bound: &Bound, image: &str) -> Result<Deployment, RenderError> {
    let names = Names::of(tenant);
    let image = tenant
        .spec
        .image
        .clone()
        .unwrap_or_else(|| image.to_string());
    let data = match &tenant.spec.storage {
        Some(_) => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.data.clone(),
                read_only: None,
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    };
    let tmp = Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let resources = tenant
        .spec
        .resources
        .as_ref()
        .map(|r| ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..ResourceRequirements::default()
        });
    let container = Container {
        name: "server".into(),
        image: Some(image),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            "--data-dir".into(),
            DATA_DIR.into(),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("https".into()),
            container_port: SERVER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 2, 10, 3)),
        liveness_probe: Some(probe("/healthz", 10, 20, 6)),
        resources: Some(resources.unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("250m".into())),
                ("memory".into(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
            ..ResourceRequirements::default()
        })),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Ok(Deployment {
        metadata: owned_meta(tenant, &names.workload)?,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector(tenant)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(labels(tenant)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(60),
                    volumes: Some(vec![config_volume(tenant, bound), data, tmp]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The ClusterIP Service on port 8007.
pub fn service(tenant: &Tenant) -> Result<Service, RenderError> {
    Ok(Service {
        metadata: owned_meta(tenant, &Names::of(tenant).workload)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(tenant)),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: SERVER_PORT,
                target_port: Some(IntOrString::String("https".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The data PVC, when the Tenant asks for storage. With `deletionPolicy: Retain` it has no
/// owner reference, so deleting the Tenant leaves the data behind.
pub fn data_pvc(tenant: &Tenant) -> Result<Option<PersistentVolumeClaim>, RenderError> {
    let Some(storage) = &tenant.spec.storage else {
        return Ok(None);
    };
    let mut metadata = owned_meta(tenant, &Names::of(tenant).data)?;
    if tenant.spec.deletion_policy == DeletionPolicy::Retain {
        metadata.owner_references = None;
    }
    Ok(Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }))
}

/// The optional Ingress for the tenant's host name, with TLS passed through to the server
/// (PBS clients pin the server's own certificate).
pub fn ingress(tenant: &Tenant) -> Result<Option<Ingress>, RenderError> {
    let Some(spec) = &tenant.spec.ingress else {
        return Ok(None);
    };
    let names = Names::of(tenant);
    let mut metadata = owned_meta(tenant, &names.workload)?;
    let mut annotations = BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/ssl-passthrough".to_string(),
            "true".to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/backend-protocol".to_string(),
            "HTTPS".to_string(),
        ),
    ]);
    annotations.extend(spec.annotations.clone());
    metadata.annotations = Some(annotations);
    Ok(Some(Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![spec.host.clone()]),
                secret_name: None,
            }]),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names.workload.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("https".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        ..Ingress::default()
    }))
}
