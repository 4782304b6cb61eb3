// State shared by the pages for as long as the tab lives (memory only).
export const session = {
  /** GET /v1/user of the signed-in account (null when signed out). */
  user: null,
  /** The token read from a mail link (verify-email, reset-password), already removed from the URL. */
  mailToken: null,
  /** Instance tokens shown once, after creation or regeneration: instance id -> token. */
  freshTokens: new Map(),
  /** The email given at sign-up, for the "check your email" page. */
  signUpEmail: null,
  navigate: () => {},
  focusOnRender: false,
}
