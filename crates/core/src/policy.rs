//! Cedar policy decisions: may this identity do this action on this resource?
//!
//! Policies are loaded from `*.cedar` files, validated against the schema
//! generated from the core's and the protocols' vocabularies
//! ([`crate::vocabulary`]), and swapped atomically on reload
//! so live sessions never see a half-loaded set. Anything not permitted is
//! denied.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use serde::Serialize;
use thiserror::Error;

use crate::approvals::ReviewRule;
use crate::grants::GrantTable;
use crate::Identity;

use crate::vocabulary::{cedar_schema, Vocabulary};

/// The context attributes `protocols` mark as differing per request.
fn per_request_attributes(protocols: &[&Vocabulary]) -> Vec<&'static str> {
    protocols
        .iter()
        .flat_map(|v| v.context.iter())
        .filter(|c| c.per_request)
        .map(|c| c.name)
        .collect()
}

/// Why a policy set could not be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not parse as Cedar.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cedar's explanation.
        message: String,
    },
    /// The set does not validate against the schema.
    #[error("policies do not match the schema: {0}")]
    Invalid(String),
    /// The built-in schema is broken (a bug).
    #[error("built-in schema: {0}")]
    Schema(String),
    /// Two policies share an id.
    #[error("duplicate policy id {0}")]
    DuplicateId(String),
}

/// An action a principal asks to perform, by its Cedar id. The core names
/// the actions every protocol shares; a protocol names its own with
/// [`Action::named`] from its [`Vocabulary`] (for SQL, `select` …
/// `unmask`; for SSH, `ssh_shell` …), so the core needs no change for a
/// new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Action(&'static str);

impl Action {
    /// Open a session on a connection.
    pub const CONNECT: Action = Action("connect");
    /// Read the session list and recordings through the API.
    pub const VIEW_SESSIONS: Action = Action("view_sessions");
    /// End or otherwise change sessions through the API.
    pub const MANAGE_SESSIONS: Action = Action("manage_sessions");
    /// See the connections' configuration and health, and ask the policy
    /// what-if questions, in the console.
    pub const VIEW_CONFIGURATION: Action = Action("view_configuration");
    /// Ask for a role on a connection for a while.
    pub const REQUEST_GRANT: Action = Action("request_grant");

    /// The action with Cedar id `id`, as a protocol's vocabulary declares it.
    pub const fn named(id: &'static str) -> Action {
        Action(id)
    }

    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// What an action is performed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Resource {
    /// A configured connection, by name.
    Connection(String),
    /// The gateway itself (its admin API).
    Gateway,
    /// An object inside a connection, of a type a protocol declares.
    Object(ObjectRef),
}

/// An object inside a connection: `<Entity>::"<connection>/<name>"`, such
/// as `Table::"app-db/public.users"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectRef {
    /// The Cedar entity type (`Table`), declared by a protocol's vocabulary.
    pub entity: &'static str,
    /// The connection.
    pub connection: String,
    /// The object's name within the connection (`public.users`).
    pub name: String,
    /// The object it lies in, nearest first, as (entity type, name): a
    /// column's table. The connection is always last and implied.
    pub within: Option<(&'static str, String)>,
}

impl Resource {
    /// An object of type `entity` named `name` in `connection`.
    pub fn object(entity: &'static str, connection: &str, name: impl Into<String>) -> Resource {
        Resource::Object(ObjectRef {
            entity,
            connection: connection.to_owned(),
            name: name.into(),
            within: None,
        })
    }

    /// The object's name when it is of type `entity`.
    pub fn object_name(&self, entity: &str) -> Option<&str> {
        match self {
            Resource::Object(o) if o.entity == entity => Some(&o.name),
            _ => None,
        }
    }

    fn uid(&self, t: &Types) -> Result<EntityUid, String> {
        Ok(match self {
            Resource::Connection(name) => t.uid(&t.connection, name),
            Resource::Gateway => t.uid(&t.gateway, "portcullis"),
            Resource::Object(o) => {
                t.uid(&t.named(o.entity)?, &format!("{}/{}", o.connection, o.name))
            }
        })
    }

    /// What the resource lies in, nearest first: a column's table, then
    /// the connection.
    fn ancestors(&self, t: &Types) -> Result<Vec<EntityUid>, String> {
        let Resource::Object(o) = self else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(2);
        if let Some((entity, name)) = &o.within {
            out.push(t.uid(&t.named(entity)?, &format!("{}/{name}", o.connection)));
        }
        out.push(t.uid(&t.connection, &o.connection));
        Ok(out)
    }

    /// How the resource reads in messages: `app-db/public.users`.
    pub fn describe(&self) -> String {
        match self {
            Resource::Connection(name) => name.clone(),
            Resource::Object(o) => format!("{}/{}", o.connection, o.name),
            Resource::Gateway => "the gateway".into(),
        }
    }
}

/// Facts about the request beyond who, what and on what.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// `postgres`, `api`, …
    pub protocol: &'static str,
    /// Client address as seen by the gateway.
    pub client_address: String,
    /// Context attributes a protocol's vocabulary declares (for SQL,
    /// `statement_kind` and `statement`; for SSH, `command`).
    pub extra: Vec<(&'static str, ContextValue)>,
}

/// The value of a protocol's context attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    /// A string.
    Str(String),
    /// A number.
    Long(i64),
}

impl RequestFacts {
    /// Adds the context attribute `name`.
    pub fn with(mut self, name: &'static str, value: ContextValue) -> Self {
        self.extra.push((name, value));
        self
    }
}

/// The outcome of a decision, with the policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Ids of the determining policies: the permits that allowed it, or the
    /// forbids that denied it (empty when nothing permitted it).
    pub policies: Vec<String>,
    /// Policy evaluation errors (a policy that errors does not permit).
    pub errors: Vec<String>,
    /// The reviews asked for by `@review("…")` on the permits that
    /// allowed it: the request needs their approval before it may run.
    pub reviews: Vec<ReviewRule>,
}

impl Verdict {
    /// One line saying why the request was denied, for clients and logs.
    pub fn reason(&self) -> String {
        if self.policies.is_empty() {
            "no policy permits it".to_owned()
        } else {
            format!("policy {}", self.policies.join(", "))
        }
    }
}

struct Loaded {
    set: PolicySet,
    count: usize,
    /// `@review("…")` of each policy that has one, read once at load:
    /// `Policy::annotation` parses its key on every call, which cost more
    /// than the rest of a decision.
    reviews: HashMap<PolicyId, ReviewRule>,
    /// Whether any policy reads a per-request attribute (the exact
    /// statement text) or the time: then a decision holds for this
    /// request only.
    reads_per_request_context: bool,
}

/// Decides requests against the current policy set.
pub struct PolicyEngine {
    generation: std::sync::atomic::AtomicU64,
    schema: Schema,
    schema_text: String,
    /// Context attributes that differ per request (see [`crate::vocabulary::ContextSpec`]).
    per_request: Vec<&'static str>,
    types: Types,
    authorizer: Authorizer,
    current: RwLock<Arc<Loaded>>,
    entities: Mutex<HashMap<EntityKey, Arc<Entities>>>,
    /// Grants in force, for `context.grants`.
    grants: Arc<GrantTable>,
}

impl PolicyEngine {
    /// An engine over the policies in `dir` (all `*.cedar` files), in the
    /// language of the core and `protocols`.
    pub fn from_dir(dir: &Path, protocols: &[&Vocabulary]) -> Result<Self, PolicyError> {
        let (schema_text, schema) = builtin_schema(protocols)?;
        let per_request = per_request_attributes(protocols);
        let loaded = load_dir(dir, &schema, &per_request)?;
        Self::with(schema_text, schema, per_request, loaded)
    }

    /// An engine over policies given as text (for tests and `policy check`).
    pub fn from_text(text: &str, protocols: &[&Vocabulary]) -> Result<Self, PolicyError> {
        let (schema_text, schema) = builtin_schema(protocols)?;
        let per_request = per_request_attributes(protocols);
        let sources = vec![(PathBuf::from("<inline>"), text.to_owned())];
        let loaded = load_sources(sources, &schema, &per_request)?;
        Self::with(schema_text, schema, per_request, loaded)
    }

    fn with(
        schema_text: String,
        schema: Schema,
        per_request: Vec<&'static str>,
        loaded: Loaded,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            generation: std::sync::atomic::AtomicU64::new(0),
            schema,
            schema_text,
            per_request,
            types: Types::new()?,
            authorizer: Authorizer::new(),
            current: RwLock::new(Arc::new(loaded)),
            entities: Mutex::new(HashMap::new()),
            grants: Arc::default(),
        })
    }

    /// Reads `context.grants` from `grants`.
    pub fn with_grants(mut self, grants: Arc<GrantTable>) -> Self {
        self.grants = grants;
        self
    }

    /// The Cedar schema policies are validated against.
    pub fn schema(&self) -> &str {
        &self.schema_text
    }

    /// Replaces the policy set with the one in `dir`, or keeps the old set and
    /// returns the error. Returns the number of policies loaded.
    pub fn reload(&self, dir: &Path) -> Result<usize, PolicyError> {
        let loaded = load_dir(dir, &self.schema, &self.per_request)?;
        let n = loaded.count;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(loaded);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(n)
    }

    /// Bumped by every reload and every change of the grants in force:
    /// decisions made under an older generation may no longer hold.
    pub fn generation(&self) -> u64 {
        // Both counters only grow, so their sum changes when either does.
        self.generation.load(std::sync::atomic::Ordering::Acquire) + self.grants.generation()
    }

    /// Whether any policy in force reads `context.statement` or the time:
    /// when none does, a decision holds for every text with the same
    /// statements at any moment, so callers may reuse it.
    pub fn reads_per_request_context(&self) -> bool {
        self.snapshot().reads_per_request_context
    }

    /// How many policies are in force.
    pub fn policy_count(&self) -> usize {
        self.snapshot().count
    }

    fn snapshot(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The principal, its groups, the resource and its connection, as Cedar
    /// entities (with the schema's action hierarchy). Reused across
    /// decisions: they depend on who and what, never on the policies.
    fn entities_for(
        &self,
        identity: &Identity,
        resource: &Resource,
    ) -> Result<Arc<Entities>, String> {
        let key = EntityKey {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            resource: resource.clone(),
        };
        let lock = || self.entities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = lock().get(&key) {
            return Ok(e.clone());
        }
        let t = &self.types;
        let principal = t.uid(&t.user, &identity.user);
        let groups: HashSet<EntityUid> =
            identity.groups.iter().map(|g| t.uid(&t.group, g)).collect();
        let mut list = vec![Entity::new_no_attrs(principal, groups.clone())];
        list.extend(
            groups
                .into_iter()
                .map(|g| Entity::new_no_attrs(g, HashSet::new())),
        );
        let ancestors = resource.ancestors(t)?;
        for (i, a) in ancestors.iter().enumerate() {
            let above: HashSet<EntityUid> = ancestors.get(i + 1).cloned().into_iter().collect();
            list.push(Entity::new_no_attrs(a.clone(), above));
        }
        let parents: HashSet<EntityUid> = ancestors.first().cloned().into_iter().collect();
        list.push(Entity::new_no_attrs(resource.uid(t)?, parents));
        let entities =
            Arc::new(Entities::from_entities(list, Some(&self.schema)).map_err(|e| e.to_string())?);
        let mut map = lock();
        if map.len() >= ENTITY_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, entities.clone());
        Ok(entities)
    }

    /// Decides whether `identity` may perform `action` on `resource`.
    pub fn decide(
        &self,
        identity: &Identity,
        action: Action,
        resource: &Resource,
        facts: &RequestFacts,
    ) -> Verdict {
        match self.try_decide(identity, action, resource, facts) {
            Ok(v) => v,
            // Fail closed: a request we cannot even pose is denied.
            Err(e) => Verdict {
                allowed: false,
                policies: vec![],
                errors: vec![e],
                reviews: vec![],
            },
        }
    }

    fn try_decide(
        &self,
        identity: &Identity,
        action: Action,
        resource: &Resource,
        facts: &RequestFacts,
    ) -> Result<Verdict, String> {
        let entities = self.entities_for(identity, resource)?;
        let mut ctx: Vec<(String, RestrictedExpression)> = vec![
            (
                "protocol".into(),
                RestrictedExpression::new_string(facts.protocol.to_owned()),
            ),
            (
                "client_address".into(),
                RestrictedExpression::new_string(facts.client_address.clone()),
            ),
        ];
        let granted = match resource {
            Resource::Connection(c) => self.grants.roles(identity, c),
            Resource::Object(o) => self.grants.roles(identity, &o.connection),
            Resource::Gateway => Vec::new(),
        };
        ctx.push((
            "grants".into(),
            RestrictedExpression::new_set(
                granted.into_iter().map(RestrictedExpression::new_string),
            ),
        ));
        if let Some(actor) = &identity.actor {
            ctx.push((
                "actor".into(),
                RestrictedExpression::new_string(actor.clone()),
            ));
        }
        for (name, value) in &facts.extra {
            let value = match value {
                ContextValue::Str(v) => RestrictedExpression::new_string(v.clone()),
                ContextValue::Long(v) => RestrictedExpression::new_long(*v),
            };
            ctx.push(((*name).into(), value));
        }
        let now = time::OffsetDateTime::now_utc();
        ctx.push((
            "time".into(),
            RestrictedExpression::new_long(now.unix_timestamp()),
        ));
        ctx.push((
            "hour".into(),
            RestrictedExpression::new_long(i64::from(now.hour())),
        ));
        ctx.push((
            "weekday".into(),
            RestrictedExpression::new_long(i64::from(now.weekday().number_days_from_monday())),
        ));
        let context = Context::from_pairs(ctx).map_err(|e| e.to_string())?;
        let t = &self.types;
        // Built from our own types and validated policies; re-validating
        // every request against the schema would double the cost.
        let request = Request::new(
            t.uid(&t.user, &identity.user),
            t.uid(&t.action, action.as_str()),
            resource.uid(t)?,
            context,
            None,
        )
        .map_err(|e| e.to_string())?;
        let loaded = self.snapshot();
        let response = self
            .authorizer
            .is_authorized(&request, &loaded.set, &entities);
        let diag = response.diagnostics();
        let allowed = response.decision() == CedarDecision::Allow;
        let mut policies: Vec<String> = diag.reason().map(|id| id.to_string()).collect();
        policies.sort();
        let mut reviews: Vec<ReviewRule> = if allowed {
            diag.reason()
                .filter_map(|id| loaded.reviews.get(id).cloned())
                .collect()
        } else {
            Vec::new()
        };
        reviews.sort();
        reviews.dedup();
        Ok(Verdict {
            allowed,
            policies,
            errors: diag.errors().map(|e| e.to_string()).collect(),
            reviews,
        })
    }
}

/// The schema's entity type names, parsed once (parsing one costs more
/// than the rest of a decision).
struct Types {
    user: EntityTypeName,
    group: EntityTypeName,
    connection: EntityTypeName,
    gateway: EntityTypeName,
    action: EntityTypeName,
    /// Protocols' types, parsed at first use.
    others: Mutex<HashMap<&'static str, EntityTypeName>>,
}

impl Types {
    fn new() -> Result<Self, PolicyError> {
        let p =
            |s: &str| EntityTypeName::from_str(s).map_err(|e| PolicyError::Schema(e.to_string()));
        Ok(Self {
            user: p("User")?,
            group: p("Group")?,
            connection: p("Connection")?,
            gateway: p("Gateway")?,
            action: p("Action")?,
            others: Mutex::new(HashMap::new()),
        })
    }

    /// The type `name`, parsed once.
    fn named(&self, name: &'static str) -> Result<EntityTypeName, String> {
        let mut map = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(name) {
            return Ok(t.clone());
        }
        let t = EntityTypeName::from_str(name).map_err(|e| e.to_string())?;
        map.insert(name, t.clone());
        Ok(t)
    }

    fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// Who asks about what: the entities a decision needs depend on nothing else.
#[derive(PartialEq, Eq, Hash)]
struct EntityKey {
    user: String,
    groups: Vec<String>,
    resource: Resource,
}

/// Entity sets kept for reuse; cleared when full.
const ENTITY_CACHE_ENTRIES: usize = 4096;

fn builtin_schema(protocols: &[&Vocabulary]) -> Result<(String, Schema), PolicyError> {
    let text = cedar_schema(protocols);
    let schema = Schema::from_cedarschema_str(&text)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::Schema(e.to_string()))?;
    Ok((text, schema))
}

fn load_dir(dir: &Path, schema: &Schema, per_request: &[&str]) -> Result<Loaded, PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        sources.push((path, text));
    }
    load_sources(sources, schema, per_request)
}

/// Parses every source, naming each policy by its `@id("…")` annotation or
/// `<file stem>:<n>`, and validates the whole set.
fn load_sources(
    sources: Vec<(PathBuf, String)>,
    schema: &Schema,
    per_request: &[&str],
) -> Result<Loaded, PolicyError> {
    let mut set = PolicySet::new();
    let mut count = 0;
    let mut reviews = HashMap::new();
    let mut reads_per_request_context = false;
    for (path, text) in sources {
        reads_per_request_context |= mentions_per_request_context(&text, per_request);
        let parsed = PolicySet::from_str(&text).map_err(|e| PolicyError::Parse {
            path: path.clone(),
            message: format!("{:?}", miette_free(&e)),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Cedar names parsed policies `policy0`, `policy1`, … in file order;
        // sort on that so `<stem>:<n>` counts as the author reads.
        let mut policies: Vec<_> = parsed.policies().cloned().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        for (i, p) in policies.into_iter().enumerate() {
            let id = p
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{stem}:{}", i + 1));
            let p = p.new_id(PolicyId::new(&id));
            if let Some(r) = p.annotation("review") {
                let rule = ReviewRule::from_annotations(
                    &id,
                    r,
                    p.annotation("approvals"),
                    p.annotation("wait"),
                )
                .map_err(|e| PolicyError::Invalid(format!("policy {id}: {e}")))?;
                reviews.insert(PolicyId::new(&id), rule);
            } else if p.annotation("approvals").is_some() || p.annotation("wait").is_some() {
                return Err(PolicyError::Invalid(format!(
                    "policy {id}: @approvals and @wait need a @review(\"group\") beside them"
                )));
            }
            set.add(p).map_err(|_| PolicyError::DuplicateId(id))?;
            count += 1;
        }
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        let msgs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        return Err(PolicyError::Invalid(msgs.join("; ")));
    }
    Ok(Loaded {
        set,
        count,
        reviews,
        reads_per_request_context,
    })
}

/// Whether policy text may read an attribute that differs from request
/// to request (the time, or one a vocabulary marks so, such as the
/// statement text). Conservative: any mention of such a word as a whole
/// identifier (`statement`, not `statement_kind`) counts, comments and
/// strings included.
fn mentions_per_request_context(text: &str, per_request: &[&str]) -> bool {
    ["time", "hour", "weekday"]
        .iter()
        .chain(per_request)
        .any(|word| {
            text.match_indices(word).any(|(i, m)| {
                let before = text[..i].chars().next_back();
                let next = text[i + m.len()..].chars().next();
                let ident =
                    |c: Option<char>| matches!(c, Some(c) if c == '_' || c.is_alphanumeric());
                !ident(before) && !ident(next)
            })
        })
}

fn miette_free(e: &cedar_policy::ParseErrors) -> String {
    e.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
