-- The one form of visitor token a site accepts: 'hmac' (hmac.<user id>.<hex HMAC>) or 'jwt'
-- (HS256). Both forms are HMAC-SHA256 under the site's one secret, so accepting both let a user
-- hash issued for a JWT-shaped user id pass as a JWT for any user (see visitor/tokens.rs).
--
-- Sites that already have a secret become 'hmac': it is the form the widget's
-- Confab.identify({ userId, userHash }) sends, and a site that issues HMAC hashes is exactly the
-- one the forgery needs, so refusing JWTs there closes it whichever form the site used. A site
-- that used JWTs gets `wrong_visitor_token_form` and moves with
-- `confab sites verification ID --mode jwt --new-secret`.
ALTER TABLE sites ADD COLUMN visitor_token_mode TEXT NOT NULL DEFAULT 'hmac'
    CHECK (visitor_token_mode IN ('hmac', 'jwt'));
