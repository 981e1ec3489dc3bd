// @bitrix24/b24jssdk against imnotify, through the SDK's public API only.
//
// B24Hook.fromWebhookUrl() insists on https://, so the harness serves real TLS and Node trusts
// the test CA through NODE_EXTRA_CA_CERTS. The SDK is found through NODE_PATH (.deps/).
// Reports one JSON line per case on stdout (see _common.py).
'use strict'
const { B24Hook, B24OAuth, AjaxError } = require('@bitrix24/b24jssdk')

const config = JSON.parse(process.env.INTEROP_CONFIG)
const plan = config.plan

function report(name, ok, detail = '', extra = {}) {
  console.log(JSON.stringify({ case: name, ok: Boolean(ok), detail, ...extra }))
}
const isId = (v) => Number.isInteger(v) && v > 0

async function runCase(name, fn) {
  try {
    await fn()
  } catch (e) {
    console.error(e)
    report(name, false, `${e && e.name}: ${e && e.code ? e.code + ' ' : ''}${e && e.message}`)
  }
}

async function notify(b24, params) {
  const res = await b24.actions.v2.call.make({ method: 'im.notify.system.add', params })
  if (!res.isSuccess) throw new Error(`not a success: ${res.getErrorMessages().join('; ')}`)
  // The SDK feeds `time` to its operating-limit bookkeeping; it must be Bitrix24's shape.
  const t = res.getData().time
  if (typeof t.start !== 'number' || typeof t.operating !== 'number' || !t.date_start) {
    throw new Error(`odd time block ${JSON.stringify(t)}`)
  }
  return res.getData().result
}

function oauthClient(accessToken) {
  const o = config.oauth
  return new B24OAuth(
    {
      applicationToken: '',
      userId: 1,
      memberId: o.member_id,
      accessToken,
      refreshToken: o.refresh_token,
      expires: Math.floor(Date.now() / 1000) + 3600,
      expiresIn: 3600,
      scope: 'im',
      domain: config.host,
      // Calls go to the client endpoint; token refresh goes to the server endpoint's
      // /oauth/token/. Both point at imnotify (what its token answers say too).
      clientEndpoint: `${config.base}/rest/`,
      serverEndpoint: `${config.base}/rest/`,
      status: 'L',
    },
    { clientId: o.client_id, clientSecret: o.client_secret },
  )
}

async function main() {
  const hook = B24Hook.fromWebhookUrl(config.webhook.url)

  await runCase('notify', async () => {
    const ids = []
    for (const p of plan.notifications) ids.push(await notify(hook, p))
    report('notify', ids.every(isId), `ids ${JSON.stringify(ids)}`, { ids })
  })

  await runCase('user_id_empty', async () => {
    try {
      await notify(hook, plan.bad)
      report('user_id_empty', false, 'the call did not fail')
    } catch (e) {
      // The SDK's own error type: AjaxError with the server's code and HTTP status.
      const ok = e instanceof AjaxError && e.code === 'USER_ID_EMPTY' && e.status === 400
      report('user_id_empty', ok, `${e.name} code=${e.code} status=${e.status}: ${e.message}`)
    }
  })

  await runCase('batch', async () => {
    const calls = plan.batch.map((p) => ['im.notify.system.add', p])
    const res = await hook.actions.v2.batch.make({ calls, options: { isHaltOnError: true } })
    if (!res.isSuccess) throw new Error(`batch failed: ${res.getErrorMessages().join('; ')}`)
    // For a list of calls, getData() is the list of the commands' results, in order.
    const ids = res.getData()
    report('batch', ids.every(isId), `ids ${JSON.stringify(ids)}`, { ids })
  })

  if (!config.oauth) return

  await runCase('oauth', async () => {
    const id = await notify(oauthClient(config.oauth.access_token), plan.oauth_notification)
    report('oauth', isId(id), `id ${id}`, { ids: [id] })
  })

  await runCase('oauth_refresh', async () => {
    // A token the server does not know: it answers 401 invalid_token, and the SDK refreshes
    // through serverEndpoint (imnotify's /oauth/token/) and retries with the new token.
    const b24 = oauthClient('revoked-access-token')
    let renewed = null
    b24.setCallbackRefreshAuth(async ({ authData }) => { renewed = authData })
    const id = await notify(b24, plan.refresh_notification)
    const ok = isId(id) && renewed && renewed.access_token && renewed.refresh_token
    report('oauth_refresh', ok, `id ${id}, refreshed=${Boolean(renewed)}`, {
      ids: [id],
      new_refresh_token: renewed && renewed.refresh_token,
    })
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
