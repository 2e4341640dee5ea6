// Publishes one update to an ssehub (Mercure) hub using only the JDK: java.net.http for the
// POST, javax.crypto (HmacSHA256) and java.util.Base64 for the publisher JWT.
//
// Run it as a single source file (JDK 11 or newer; Debian's default-jdk-headless is JDK 17):
//
//   SSEHUB_PUBLISHER_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!' \
//     java examples/java/Publish.java --topic https://example.com/books/1 --data '{"title":"Dune"}'
//
// It prints the event id the hub answered with. `--help` lists the options. Each run sends one
// Idempotency-Key (a random UUID unless --idempotency-key is given) and retries connection
// errors, 429 and 5xx answers with that same key, so a retry whose first attempt did reach the
// hub is answered with the original id and is not delivered twice. Exit status: 0 published,
// 1 the hub refused the update or could not be reached, 2 bad usage.
//
// tests/it/java_client.rs compiles and runs this file against the real hub.

import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.UUID;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public final class Publish {
    static final String DEFAULT_URL = "http://127.0.0.1:3000/.well-known/mercure";

    static final String USAGE = String.join("\n",
        "Usage: java Publish.java --topic TOPIC [--topic TOPIC...] [options]",
        "",
        "Publishes one update to an ssehub (Mercure) hub and prints its event id.",
        "",
        "Options:",
        "  --topic TOPIC            topic of the update (repeatable; the first is canonical)",
        "  --data DATA              the payload (default: empty)",
        "  --private                deliver only to subscribers whose token's mercure.subscribe",
        "                           matches one of the topics",
        "  --id ID                  event id (default: the hub generates urn:uuid:...)",
        "  --type TYPE              event type (the SSE event field)",
        "  --retry MS               reconnection delay to tell clients, in milliseconds",
        "  --idempotency-key KEY    Idempotency-Key header (default: a random UUID per run);",
        "                           every retry of this run sends the same key",
        "  --attempts N             attempts on connection errors, 429 and 5xx (default 5)",
        "  --url URL                hub URL (default: $SSEHUB_URL, else " + DEFAULT_URL + ")",
        "  --jwt-key KEY            HS256 key to sign a publisher token with (default:",
        "                           $SSEHUB_PUBLISHER_JWT_KEY, else $SSEHUB_JWT_KEY)",
        "  --token JWT              a ready publisher token instead (default: $SSEHUB_TOKEN)",
        "  --help                   this text",
        "",
        "The signed token grants mercure.publish for exactly the given topics and expires",
        "after 5 minutes. Exit status: 0 published, 1 refused or unreachable, 2 bad usage.");

    /** A bad command line: exit 2 with the message and a pointer to --help. */
    static final class UsageError extends Exception {
        UsageError(String message) {
            super(message);
        }
    }

    /** The hub refused the update, or could not be reached in the allowed attempts: exit 1. */
    static final class PublishError extends Exception {
        PublishError(String message) {
            super(message);
        }
    }

    /** What the command line asks for. */
    static final class Update {
        final List<String> topics = new ArrayList<>();
        String data = "";
        boolean isPrivate;
        String id;
        String type;
        String retry;
        String idempotencyKey = UUID.randomUUID().toString();
        int attempts = 5;
        String url = envOr("SSEHUB_URL", DEFAULT_URL);
        String jwtKey = envOr("SSEHUB_PUBLISHER_JWT_KEY", System.getenv("SSEHUB_JWT_KEY"));
        String token = System.getenv("SSEHUB_TOKEN");
    }

    public static void main(String[] args) {
        try {
            Update update = parse(args);
            if (update == null) {
                System.out.println(USAGE);
                return;
            }
            System.out.println(publish(update));
        } catch (UsageError e) {
            System.err.println("error: " + e.getMessage());
            System.err.println("(java Publish.java --help lists the options)");
            System.exit(2);
        } catch (PublishError e) {
            System.err.println("error: " + e.getMessage());
            System.exit(1);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            System.err.println("error: interrupted");
            System.exit(1);
        }
    }

    /** Reads the arguments; null means --help. */
    static Update parse(String[] args) throws UsageError {
        Update update = new Update();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--help":
                case "-h":
                    return null;
                case "--private":
                    update.isPrivate = true;
                    continue;
                default:
                    break;
            }
            if (i + 1 >= args.length) {
                throw new UsageError(arg.startsWith("--")
                    ? arg + " needs a value"
                    : "unexpected argument " + arg);
            }
            String value = args[++i];
            switch (arg) {
                case "--topic": update.topics.add(value); break;
                case "--data": update.data = value; break;
                case "--id": update.id = value; break;
                case "--type": update.type = value; break;
                case "--retry":
                    if (!value.matches("[0-9]+")) {
                        throw new UsageError("--retry takes a whole number of milliseconds, not " + value);
                    }
                    update.retry = value;
                    break;
                case "--idempotency-key": update.idempotencyKey = value; break;
                case "--attempts":
                    try {
                        update.attempts = Integer.parseInt(value);
                    } catch (NumberFormatException e) {
                        throw new UsageError("--attempts takes a number, not " + value);
                    }
                    if (update.attempts < 1 || update.attempts > 100) {
                        throw new UsageError("--attempts takes 1 to 100, not " + value);
                    }
                    break;
                case "--url": update.url = value; break;
                case "--jwt-key": update.jwtKey = value; break;
                case "--token": update.token = value; break;
                default: throw new UsageError("unknown option " + arg);
            }
        }
        if (update.topics.isEmpty()) {
            throw new UsageError("give at least one --topic");
        }
        if (isBlank(update.token) && isBlank(update.jwtKey)) {
            throw new UsageError("no publisher credentials: set SSEHUB_PUBLISHER_JWT_KEY (or"
                + " SSEHUB_JWT_KEY, or --jwt-key) to the hub's publisher key, or SSEHUB_TOKEN"
                + " (or --token) to a publisher JWT");
        }
        return update;
    }

    /** POSTs the update, retrying with the same Idempotency-Key; returns the event id. */
    static String publish(Update update) throws PublishError, InterruptedException {
        URI uri;
        try {
            uri = URI.create(update.url);
        } catch (IllegalArgumentException e) {
            throw new PublishError("bad hub URL " + update.url + ": " + e.getMessage());
        }
        String token = isBlank(update.token) ? signPublisherToken(update.jwtKey, update.topics) : update.token;
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        HttpRequest request = HttpRequest.newBuilder(uri)
            .timeout(Duration.ofSeconds(30))
            .header("Authorization", "Bearer " + token)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Idempotency-Key", update.idempotencyKey)
            .POST(HttpRequest.BodyPublishers.ofString(form(update)))
            .build();
        long delayMs = 200;
        for (int attempt = 1; ; attempt++) {
            String failure;
            long waitMs = delayMs;
            try {
                HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
                int status = response.statusCode();
                String body = response.body().trim();
                if (status == 200) {
                    if (response.headers().firstValue("Idempotent-Replayed").orElse("").equals("true")) {
                        System.err.println("note: the hub already had this update (Idempotency-Key "
                            + update.idempotencyKey + "): it answered with the original id");
                    }
                    return body;
                }
                if (status != 429 && status < 500) {
                    throw new PublishError(refusal(status, body));
                }
                failure = "the hub answered " + status + ": " + body;
                // Retry-After in seconds (the hub sends 1 or 5); dates are not used by ssehub.
                String retryAfter = response.headers().firstValue("Retry-After").orElse("");
                if (retryAfter.matches("[0-9]{1,3}")) {
                    waitMs = Math.max(delayMs, Long.parseLong(retryAfter) * 1000);
                }
            } catch (ConnectException e) {
                failure = "cannot connect to " + update.url;
            } catch (IOException e) {
                failure = "request to " + update.url + " failed: " + e;
            }
            if (attempt >= update.attempts) {
                throw new PublishError(failure + " (gave up after " + attempt + " attempts)");
            }
            System.err.println(failure + "; retrying in " + waitMs + " ms with the same"
                + " Idempotency-Key (attempt " + attempt + " of " + update.attempts + ")");
            Thread.sleep(waitMs);
            delayMs = Math.min(delayMs * 2, 5000);
        }
    }

    /** The message for a 4xx: the hub's own reason, and what to change. */
    static String refusal(int status, String body) {
        String hint;
        switch (status) {
            case 401:
                hint = "the token is missing, expired or not signed with the hub's publisher key:"
                    + " check SSEHUB_PUBLISHER_JWT_KEY against the hub's --publisher-jwt-key"
                    + " (or --jwt-key)";
                break;
            case 403:
                hint = "the token's mercure.publish does not match every topic of the update";
                break;
            case 422:
                hint = "this Idempotency-Key was already used for another update: use a new key"
                    + " per update";
                break;
            default:
                hint = "the update was not stored";
        }
        return "the hub refused the update (" + status + "): " + body + "\n  " + hint;
    }

    /** The form body: repeated topic, data, and the optional fields. */
    static String form(Update update) {
        StringBuilder body = new StringBuilder();
        for (String topic : update.topics) {
            field(body, "topic", topic);
        }
        field(body, "data", update.data);
        if (update.isPrivate) {
            field(body, "private", "on");
        }
        if (update.id != null) {
            field(body, "id", update.id);
        }
        if (update.type != null) {
            field(body, "type", update.type);
        }
        if (update.retry != null) {
            field(body, "retry", update.retry);
        }
        return body.toString();
    }

    static void field(StringBuilder body, String name, String value) {
        if (body.length() > 0) {
            body.append('&');
        }
        body.append(name).append('=').append(URLEncoder.encode(value, StandardCharsets.UTF_8));
    }

    /**
     * An HS256 JWT ({"alg":"HS256","typ":"JWT"}) whose mercure.publish lists exactly the
     * update's topics, expiring in 5 minutes: what the hub checks for a draft-07 publisher.
     */
    static String signPublisherToken(String key, List<String> topics) throws PublishError {
        StringBuilder publish = new StringBuilder();
        for (String topic : topics) {
            publish.append(publish.length() == 0 ? "" : ",").append(jsonString(topic));
        }
        long exp = Instant.now().plusSeconds(300).getEpochSecond();
        String header = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
        String claims = "{\"exp\":" + exp + ",\"mercure\":{\"publish\":[" + publish + "]}}";
        Base64.Encoder base64url = Base64.getUrlEncoder().withoutPadding();
        String signingInput = base64url.encodeToString(header.getBytes(StandardCharsets.UTF_8))
            + "." + base64url.encodeToString(claims.getBytes(StandardCharsets.UTF_8));
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            byte[] signature = mac.doFinal(signingInput.getBytes(StandardCharsets.US_ASCII));
            return signingInput + "." + base64url.encodeToString(signature);
        } catch (java.security.GeneralSecurityException e) {
            throw new PublishError("cannot sign the token with HmacSHA256: " + e.getMessage());
        }
    }

    /** A JSON string literal (RFC 8259 §7). */
    static String jsonString(String value) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : value.toCharArray()) {
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                default:
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        return out.append('"').toString();
    }

    static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return isBlank(value) ? fallback : value;
    }

    static boolean isBlank(String value) {
        return value == null || value.isBlank();
    }
}
