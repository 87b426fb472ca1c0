//! Secrets: create, get, list, update (labels only; the data is immutable), remove (refused
//! while a service uses the secret).
//!
//! A secret's data goes into the store and, from there, only to the nodes whose tasks use it
//! (the dispatcher's business): it never comes back out through this API. Every answer carries
//! the secret without `spec.data`, and nothing here logs a secret or its spec. Internal secrets
//! (the system's own) are hidden from users: not listed, not found, not changed.
//!
//! The calls work on a [`Secrets`] (a store, nothing else), so that tests drive them on a local
//! store; the handlers add the leader check and the read barrier.

use shoal_api::labels::Labels;
use shoal_api::v1::{
    CreateSecretRequest, CreateSecretResponse, GetSecretRequest, GetSecretResponse, ListFilters,
    ListSecretsRequest, ListSecretsResponse, Meta, RemoveSecretRequest, RemoveSecretResponse,
    Secret, SecretSpec, Service, UpdateSecretRequest, UpdateSecretResponse, task_spec,
};
use shoal_api::{id, validation};
use shoal_store::{By, Reader, Store, StoreError};
use tonic::Status;

use super::{ControlApi, Removal, filters_match};
use crate::status::store_status;

fn secret_id(s: &Secret) -> &str {
    s.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn name_of(spec: Option<&SecretSpec>) -> &str {
    spec.and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn secret_matches(s: &Secret, f: &ListFilters) -> bool {
    let annotations = s.spec.as_ref().and_then(|s| s.annotations.as_ref());
    let labels = annotations.map(|a| a.labels.as_slice()).unwrap_or(&[]);
    filters_match(secret_id(s), name_of(s.spec.as_ref()), labels, f)
}

/// The secret as the API shows it: everything but its data.
fn redacted(secret: &Secret) -> Secret {
    let mut out = secret.clone();
    if let Some(spec) = out.spec.as_mut() {
        spec.data = Vec::new();
    }
    out
}

/// Whether two byte strings are equal, in a time that does not depend on where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a service's spec references the secret `id`.
fn uses_secret(service: &Service, id: &str) -> bool {
    let runtime = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref());
    match runtime {
        Some(task_spec::Runtime::Container(c)) => c.secrets.iter().any(|s| s.secret_id == id),
        Some(task_spec::Runtime::Process(p)) => p.secrets.iter().any(|s| s.secret_id == id),
        None => false,
    }
}

fn not_found(reference: &str) -> StoreError {
    StoreError::NotFound {
        kind: "secret",
        what: reference.to_string(),
    }
}

/// The spec of a create request: present, valid (a name; data of 1 byte to less than
/// 500 KiB), labels in canonical order.
fn checked_new_spec(spec: Option<SecretSpec>) -> Result<SecretSpec, Status> {
    let mut spec =
        spec.ok_or_else(|| Status::invalid_argument("invalid spec: a secret spec is required"))?;
    validation::validate_secret_spec(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    Ok(spec)
}

/// The secret calls, on a store.
pub(super) struct Secrets<'a> {
    pub(super) store: &'a Store,
}

impl Secrets<'_> {
    /// Creates a secret from a checked spec; its name must be free.
    pub(super) async fn create(&self, spec: SecretSpec) -> Result<Secret, Status> {
        let name = name_of(Some(&spec)).to_string();
        let new_id = id::new_id();
        let secret = Secret {
            meta: Some(Meta {
                id: new_id.clone(),
                ..Default::default()
            }),
            spec: Some(spec),
            internal: false,
        };
        self.store
            .update(|tx| {
                if !tx.find::<Secret>(By::Name(&name)).is_empty() {
                    return Err(StoreError::NameConflict {
                        kind: "secret",
                        name: name.clone(),
                    });
                }
                tx.create(secret)
            })
            .await
            .map_err(|e| match e {
                StoreError::NameConflict { .. } => Status::already_exists(format!(
                    "secret name {name} is already in use; choose another name (or remove the \
                     existing secret first)"
                )),
                e => store_status(e),
            })?;
        self.store
            .view(|tx| tx.get::<Secret>(&new_id))
            .map(|s| redacted(&s))
            .ok_or_else(|| {
                Status::internal(format!("secret {new_id} vanished after it was created"))
            })
    }

    /// The secret `reference` names (ID, name or unique ID prefix), without its data.
    pub(super) fn get(&self, reference: &str) -> Result<Secret, Status> {
        let secret = self
            .store
            .view(|tx| tx.lookup::<Secret>(reference))
            .map_err(store_status)?;
        if secret.internal {
            return Err(store_status(not_found(reference)));
        }
        Ok(redacted(&secret))
    }

    /// The secrets that pass the filters, without their data, sorted by ID.
    pub(super) fn list(&self, filters: &ListFilters) -> Vec<Secret> {
        self.store.view(|tx| {
            tx.find::<Secret>(By::All)
                .into_iter()
                .filter(|s| !s.internal && secret_matches(s, filters))
                .map(|s| redacted(&s))
                .collect()
        })
    }

    /// Changes a secret's labels. The name and the data cannot change; a request may leave
    /// the data out (clients never see it), or repeat it unchanged.
    pub(super) async fn update(&self, request: UpdateSecretRequest) -> Result<Secret, Status> {
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("invalid spec: a secret spec is required"))?;
        let reference = request.secret_id;
        let mut refusal = None;
        let updated_id = self
            .store
            .update(|tx| {
                let current = tx.lookup::<Secret>(&reference)?;
                if current.internal {
                    return Err(not_found(&reference));
                }
                let current_spec = current.spec.clone().unwrap_or_default();
                let current_name = name_of(Some(&current_spec)).to_string();
                if name_of(Some(&spec)) != current_name {
                    refusal = Some(Status::invalid_argument(format!(
                        "the name of secret {current_name} cannot be changed (only its labels \
                         can); create a new secret with the new name instead"
                    )));
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                if !spec.data.is_empty() && !same_bytes(&spec.data, &current_spec.data) {
                    refusal = Some(Status::invalid_argument(format!(
                        "the data of secret {current_name} cannot be changed (only its labels \
                         can); create a new secret with the new data, move the services to it, \
                         then remove this one"
                    )));
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                let mut labels = spec
                    .annotations
                    .as_ref()
                    .map(|a| a.labels.clone())
                    .unwrap_or_default();
                labels.normalize_labels();
                let mut new_spec = current_spec;
                new_spec
                    .annotations
                    .get_or_insert_with(Default::default)
                    .labels = labels;
                if let Err(e) = validation::validate_secret_spec(&new_spec) {
                    refusal = Some(Status::invalid_argument(e.to_string()));
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                let mut updated = (*current).clone();
                updated.spec = Some(new_spec);
                updated.meta.get_or_insert_with(Default::default).version = request.secret_version;
                let id = secret_id(&updated).to_string();
                tx.update(updated)?;
                Ok(id)
            })
            .await;
        if let Some(status) = refusal {
            return Err(status);
        }
        let updated_id = updated_id.map_err(store_status)?;
        self.store
            .view(|tx| tx.get::<Secret>(&updated_id))
            .map(|s| redacted(&s))
            .ok_or_else(|| store_status(not_found(&updated_id)))
    }

    /// Removes a secret no service uses. The caller gives no version: a write committed
    /// between the read and the removal's commit makes it read again and retry.
    pub(super) async fn remove(&self, reference: &str) -> Result<(), Status> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.remove_once(reference).await {
                Err(Removal::Conflict(e)) if attempt < super::REMOVE_ATTEMPTS => {
                    tracing::debug!("removing secret {reference}: {e}; reading it again");
                }
                Err(Removal::Conflict(e)) => return Err(store_status(e)),
                Err(Removal::Refused(status)) => return Err(status),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn remove_once(&self, reference: &str) -> Result<(), Removal> {
        let mut refusal = None;
        let result = self
            .store
            .update(|tx| {
                let secret = tx.lookup::<Secret>(reference)?;
                if secret.internal {
                    return Err(not_found(reference));
                }
                let id = secret_id(&secret).to_string();
                let name = name_of(secret.spec.as_ref()).to_string();
                let users: Vec<String> = tx
                    .find::<Service>(By::All)
                    .iter()
                    .filter(|s| uses_secret(s, &id))
                    .map(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|s| s.annotations.as_ref())
                            .map(|a| a.name.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                if let Some(status) = super::in_use_by_services("secret", &name, users) {
                    refusal = Some(status);
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                tx.delete::<Secret>(&id)
            })
            .await;
        if let Some(status) = refusal {
            return Err(Removal::Refused(status));
        }
        match result {
            Err(e) if e.is_conflict() => Err(Removal::Conflict(e)),
            Err(e) => Err(Removal::Refused(store_status(e))),
            Ok(()) => Ok(()),
        }
    }
}

impl ControlApi {
    fn secrets(&self) -> Secrets<'_> {
        Secrets { store: &self.store }
    }

    pub(super) async fn create_secret(
        &self,
        request: CreateSecretRequest,
    ) -> Result<CreateSecretResponse, Status> {
        let spec = checked_new_spec(request.spec)?;
        self.require_leader()?;
        let secret = self.secrets().create(spec).await?;
        Ok(CreateSecretResponse {
            secret: Some(secret),
        })
    }

    pub(super) async fn get_secret(
        &self,
        request: GetSecretRequest,
    ) -> Result<GetSecretResponse, Status> {
        self.linearize().await?;
        let secret = self.secrets().get(&request.secret_id)?;
        Ok(GetSecretResponse {
            secret: Some(secret),
        })
    }

    pub(super) async fn list_secrets(
        &self,
        request: ListSecretsRequest,
    ) -> Result<ListSecretsResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.unwrap_or_default();
        Ok(ListSecretsResponse {
            secrets: self.secrets().list(&filters),
        })
    }

    pub(super) async fn update_secret(
        &self,
        request: UpdateSecretRequest,
    ) -> Result<UpdateSecretResponse, Status> {
        self.require_leader()?;
        let secret = self.secrets().update(request).await?;
        Ok(UpdateSecretResponse {
            secret: Some(secret),
        })
    }

    pub(super) async fn remove_secret(
        &self,
        request: RemoveSecretRequest,
    ) -> Result<RemoveSecretResponse, Status> {
        self.require_leader()?;
        self.secrets().remove(&request.secret_id).await?;
        Ok(RemoveSecretResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::clock::ManualClock;
    use shoal_api::v1::{
        Annotations, Label, ProcessSpec, SecretReference, ServiceSpec, TaskSpec, TaskSpecFields,
    };
    use shoal_store::{DEFAULT_WATCH_CAPACITY, LocalProposer};
    use std::future::Future;
    use std::sync::Arc;
    use tonic::Code;

    const DATA: &[u8] = b"hunter2-very-secret";

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }

    fn store() -> Store {
        let clock = Arc::new(ManualClock::at_unix_seconds(1_700_000_000));
        Store::with(Arc::new(LocalProposer), clock, DEFAULT_WATCH_CAPACITY)
    }

    fn label(key: &str, value: &str) -> Label {
        Label {
            key: key.into(),
            value: value.into(),
        }
    }

    fn spec(name: &str, data: &[u8], labels: Vec<Label>) -> SecretSpec {
        SecretSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels,
            }),
            data: data.to_vec(),
            ..Default::default()
        }
    }

    fn create(s: &Secrets<'_>, spec: SecretSpec) -> Result<Secret, Status> {
        block_on(s.create(checked_new_spec(Some(spec))?))
    }

    fn stored_data(store: &Store, id: &str) -> Vec<u8> {
        store.view(|tx| tx.get::<Secret>(id).unwrap().spec.clone().unwrap().data)
    }

    fn service_using(store: &Store, name: &str, secret: &str) {
        let service = Service {
            meta: Some(Meta {
                id: id::new_id(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![],
                }),
                task: Some(TaskSpec::from(TaskSpecFields {
                    runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                        command: "sleep".into(),
                        secrets: vec![SecretReference {
                            secret_id: secret.into(),
                            secret_name: "db".into(),
                            file: None,
                        }],
                        ..Default::default()
                    }))),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        block_on(store.update(|tx| tx.create(service))).unwrap();
    }

    #[test]
    fn created_secrets_keep_their_data_but_never_show_it() {
        let store = store();
        let s = Secrets { store: &store };
        let created = create(&s, spec("db", DATA, vec![label("z", "1"), label("a", "2")])).unwrap();
        let id = secret_id(&created).to_string();
        assert_eq!(id.len(), 25);
        assert!(created.spec.as_ref().unwrap().data.is_empty());
        assert_eq!(stored_data(&store, &id), DATA);

        let by_name = s.get("db").unwrap();
        assert_eq!(secret_id(&by_name), id);
        assert!(by_name.spec.as_ref().unwrap().data.is_empty());
        let labels = &by_name
            .spec
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .labels;
        assert_eq!(labels[0].key, "a", "labels in canonical order");
        assert_eq!(secret_id(&s.get(&id[..6]).unwrap()), id);

        let listed = s.list(&ListFilters::default());
        assert_eq!(listed.len(), 1);
        assert!(listed[0].spec.as_ref().unwrap().data.is_empty());
        // Nothing the API answers carries the data, whatever the encoding.
        let debug = format!("{created:?}{by_name:?}{listed:?}");
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn bad_specs_and_taken_names_are_refused() {
        let store = store();
        let s = Secrets { store: &store };
        create(&s, spec("db", DATA, vec![])).unwrap();
        let e = create(&s, spec("DB", b"other", vec![])).unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);
        assert!(
            e.message().contains("secret name DB is already in use"),
            "{e}"
        );
        let e = create(&s, spec("empty", b"", vec![])).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("spec.data"), "{e}");
        let big = vec![b'x'; 500 * 1024];
        let e = create(&s, spec("big", &big, vec![])).unwrap_err();
        assert!(e.message().contains("less than 500KiB"), "{e}");
        create(&s, spec("almost", &big[1..], vec![])).unwrap();
        let e = create(&s, spec("bad name!", DATA, vec![])).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = block_on(async { checked_new_spec(None) }).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(s.list(&ListFilters::default()).len(), 2);
    }

    #[test]
    fn lists_filter_by_names_prefixes_and_labels() {
        let store = store();
        let s = Secrets { store: &store };
        let a = create(&s, spec("app.key", DATA, vec![label("tier", "web")])).unwrap();
        create(&s, spec("app.cert", DATA, vec![label("tier", "db")])).unwrap();
        create(&s, spec("other", DATA, vec![])).unwrap();
        let names = |f: ListFilters| {
            let mut n: Vec<String> = s
                .list(&f)
                .iter()
                .map(|x| name_of(x.spec.as_ref()).to_string())
                .collect();
            n.sort();
            n
        };
        assert_eq!(
            names(ListFilters {
                names: vec!["other".into()],
                ..Default::default()
            }),
            ["other"]
        );
        assert_eq!(
            names(ListFilters {
                name_prefixes: vec!["app.".into()],
                ..Default::default()
            }),
            ["app.cert", "app.key"]
        );
        assert_eq!(
            names(ListFilters {
                id_prefixes: vec![secret_id(&a)[..10].into()],
                ..Default::default()
            }),
            ["app.key"]
        );
        assert_eq!(
            names(ListFilters {
                labels: [("tier".to_string(), String::new())].into(),
                ..Default::default()
            }),
            ["app.cert", "app.key"]
        );
        assert_eq!(
            names(ListFilters {
                labels: [("tier".to_string(), "db".to_string())].into(),
                ..Default::default()
            }),
            ["app.cert"]
        );
    }

    #[test]
    fn updates_change_labels_only() {
        let store = store();
        let s = Secrets { store: &store };
        let created = create(&s, spec("db", DATA, vec![label("a", "1")])).unwrap();
        let id = secret_id(&created).to_string();
        let version = created.meta.as_ref().unwrap().version;
        let request = |spec: SecretSpec, version: u64| UpdateSecretRequest {
            secret_id: id.clone(),
            secret_version: version,
            spec: Some(spec),
        };

        // Without the data (as a client that read the secret sends it back): labels change.
        let updated =
            block_on(s.update(request(spec("db", b"", vec![label("b", "2")]), version))).unwrap();
        assert!(updated.spec.as_ref().unwrap().data.is_empty());
        let labels = &updated
            .spec
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .labels;
        assert_eq!(labels, &vec![label("b", "2")]);
        assert_eq!(stored_data(&store, &id), DATA);
        let version2 = updated.meta.as_ref().unwrap().version;
        assert!(version2 > version);

        // The same data again is fine too.
        block_on(s.update(request(spec("db", DATA, vec![]), version2))).unwrap();
        let version3 = s.get(&id).unwrap().meta.unwrap().version;

        // New data, a new name: refused, nothing changes.
        let e = block_on(s.update(request(spec("db", b"new", vec![]), version3))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("data of secret db cannot be changed"),
            "{e}"
        );
        assert!(!e.message().contains("new\""));
        let e = block_on(s.update(request(spec("db2", b"", vec![]), version3))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("name of secret db cannot be changed"),
            "{e}"
        );
        assert_eq!(stored_data(&store, &id), DATA);

        // A stale version: out of sequence.
        let e = block_on(s.update(request(spec("db", b"", vec![]), version))).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("update out of sequence"), "{e}");

        // Unknown secret; no spec.
        let mut r = request(spec("db", b"", vec![]), version3);
        r.secret_id = "nope".into();
        assert_eq!(block_on(s.update(r)).unwrap_err().code(), Code::NotFound);
        let mut r = request(spec("db", b"", vec![]), version3);
        r.spec = None;
        assert_eq!(
            block_on(s.update(r)).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn secrets_in_use_by_a_service_are_not_removed() {
        let store = store();
        let s = Secrets { store: &store };
        let db = create(&s, spec("db", DATA, vec![])).unwrap();
        let db_id = secret_id(&db).to_string();
        create(&s, spec("free", DATA, vec![])).unwrap();
        service_using(&store, "web", &db_id);
        service_using(&store, "api", &db_id);

        let e = block_on(s.remove("db")).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(
            e.message()
                .contains("secret db is in use by services api, web"),
            "{e}"
        );
        assert!(s.get(&db_id).is_ok());

        // By name, by ID prefix; unknown ones are not found.
        block_on(s.remove("free")).unwrap();
        let e = block_on(s.remove("free")).unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        block_on(store.update(|tx| {
            for svc in tx.find::<Service>(By::All) {
                tx.delete::<Service>(svc.meta.as_ref().unwrap().id.as_str())?;
            }
            Ok(())
        }))
        .unwrap();
        block_on(s.remove(&db_id[..8])).unwrap();
        assert!(s.list(&ListFilters::default()).is_empty());
    }

    #[test]
    fn internal_secrets_are_hidden() {
        let store = store();
        let s = Secrets { store: &store };
        let internal = Secret {
            meta: Some(Meta {
                id: id::new_id(),
                ..Default::default()
            }),
            spec: Some(spec("system", DATA, vec![])),
            internal: true,
        };
        let id = secret_id(&internal).to_string();
        block_on(store.update(|tx| tx.create(internal))).unwrap();
        assert!(s.list(&ListFilters::default()).is_empty());
        assert_eq!(s.get(&id).unwrap_err().code(), Code::NotFound);
        assert_eq!(block_on(s.remove(&id)).unwrap_err().code(), Code::NotFound);
        assert_eq!(stored_data(&store, &id), DATA);
    }

    #[test]
    fn byte_comparison() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(same_bytes(b"", b""));
    }
}
