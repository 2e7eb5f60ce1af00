// A real OpenID Connect provider (npm `oidc-provider`) for Portcullis's
// tests. It is configured, not mocked: tokens are issued and signed by the
// library exactly as in production; only the login page is ours, so tests
// can drive it over plain HTTP.
//
// Environment:
//   OIDC_PORT      port on 127.0.0.1 (required)
//   OIDC_KEY_DIR   directory holding signing keys as <kid>.json
//   OIDC_KEY_IDS   comma-separated kids; the first of each algorithm signs.
//                  A kid starting with "es-" is an ES256 key, otherwise
//                  RS256. Missing keys are generated and saved, so a restart
//                  with a different list rotates keys.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const keyDir = process.env.OIDC_KEY_DIR;
const kids = (process.env.OIDC_KEY_IDS || 'k1').split(',').filter(Boolean);
if (!port || !keyDir) {
  console.error('OIDC_PORT and OIDC_KEY_DIR are required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

function loadKey(kid) {
  const file = join(keyDir, `${kid}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const ec = kid.startsWith('es-');
  const { privateKey } = ec
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: ec ? 'ES256' : 'RS256' };
  writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

// Test people. Groups come from the `groups` scope, and the same roles
// nested under `realm_access.roles` (Keycloak's shape) for nested-path tests.
const USERS = {
  alice: { password: 'alice-pw', email: 'alice@example.com', groups: ['engineering'] },
  bob: { password: 'bob-pw', email: 'bob@example.com', groups: ['contractors'] },
  root: { password: 'root-pw', email: 'root@example.com', groups: ['admins'] },
  // An issuer that types `email_verified` loosely: a string, not a boolean.
  mallory: { password: 'mallory-pw', email: 'mallory@example.com', groups: ['engineering'], email_verified: 'false' },
};

// CI jobs are client-credentials clients whose tokens carry GitHub Actions'
// claims, with GitHub's `sub` format.
const CI_JOBS = {
  'ci-app-main': { repository: 'acme/app', ref: 'refs/heads/main', workflow: 'deploy', environment: 'production' },
  'ci-app-pr': { repository: 'acme/app', ref: 'refs/pull/7/merge', workflow: 'test', environment: undefined },
  'ci-other': { repository: 'acme/other', ref: 'refs/heads/main', workflow: 'deploy', environment: 'production' },
};

const RESOURCE = 'urn:portcullis';
const native = (client_id, extra = {}) => ({
  client_id,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
  ...extra,
});
const service = (client_id) => ({
  client_id,
  client_secret: `${client_id}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
});

const provider = new Provider(issuer, {
  clients: [
    native('portcullis-cli'),
    // Its ID tokens live 3 seconds, for expiry tests.
    native('short-cli'),
    // Signs ID tokens with ES256, to cover the EC path.
    native('es-cli', { id_token_signed_response_alg: 'ES256' }),
    // The web console: a loopback redirect back to the gateway's API port.
    native('portcullis-console', { redirect_uris: ['http://127.0.0.1/login/callback'] }),
    service('agent-x'),
    ...Object.keys(CI_JOBS).map(service),
  ],
  jwks: { keys: kids.map(loadKey) },
  conformIdTokenClaims: false,
  scopes: ['openid', 'email', 'groups', 'offline_access', 'db'],
  claims: { email: ['email', 'email_verified'], groups: ['groups', 'realm_access'] },
  pkce: { required: () => true },
  ttl: {
    IdToken: (ctx, token, client) => (client?.clientId === 'short-cli' ? 3 : 600),
    AccessToken: 600,
    ClientCredentials: 600,
    DeviceCode: 300,
    Interaction: 300,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client) => (client.grantTypeAllowed('client_credentials') ? RESOURCE : undefined),
      useGrantedResource: () => false,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== RESOURCE) throw new Provider.errors.InvalidTarget();
        return { scope: 'db', audience: RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL: 600 };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const job = CI_JOBS[token.clientId];
    if (token.kind === 'ClientCredentials' && job) {
      return Object.fromEntries(Object.entries(job).filter(([, v]) => v !== undefined));
    }
    return undefined;
  },
  formats: {
    customizers: {
      jwt: async (ctx, token, jwt) => {
        const job = CI_JOBS[token.clientId];
        if (job) {
          jwt.payload.sub = `repo:${job.repository}:${job.environment ? `environment:${job.environment}` : `ref:${job.ref}`}`;
        }
      },
    },
  },
  findAccount: async (ctx, id) => {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      claims: async () => ({
        sub: id,
        email: user.email,
        ...(user.email_verified === undefined ? {} : { email_verified: user.email_verified }),
        groups: user.groups,
        realm_access: { roles: user.groups },
      }),
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'text/plain';
    ctx.body = `error: ${out.error}: ${out.error_description || ''}\n`;
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The login page: a plain form, so a test posts `login` and `password`.
// A successful login also grants what the client asked for, which stands in
// for the consent screen.
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET' && !m[2]) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><form method="post" action="/interaction/${escape(details.uid)}/login">
<input name="login"><input name="password" type="password"><button>Sign in</button></form>`;
    return undefined;
  }
  if (ctx.method === 'POST' && m[2]) {
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(new URLSearchParams(data)));
    });
    const login = body.get('login');
    const user = USERS[login];
    if (!user || user.password !== body.get('password')) {
      ctx.status = 401;
      ctx.body = 'wrong login or password\n';
      return undefined;
    }
    const { params, prompt } = details;
    let { grantId } = details;
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: login, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    grant.addOIDCScope(String(params.scope || 'openid'));
    grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: login },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return undefined;
  }
  return next();
});

// Exit with the test process that started us, however it ends.
const parent = Number(process.env.OIDC_PARENT_PID || 0);
if (parent) {
  setInterval(() => {
    try { process.kill(parent, 0); } catch { process.exit(0); }
  }, 500).unref();
}

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
