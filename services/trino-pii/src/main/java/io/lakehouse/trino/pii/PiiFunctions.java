package io.lakehouse.trino.pii;

import static io.trino.spi.StandardErrorCode.CONFIGURATION_INVALID;
import static io.trino.spi.StandardErrorCode.INVALID_FUNCTION_ARGUMENT;
import static io.trino.spi.StandardErrorCode.PERMISSION_DENIED;

import io.airlift.slice.Slice;
import io.airlift.slice.Slices;
import io.trino.spi.TrinoException;
import io.trino.spi.connector.ConnectorSession;
import io.trino.spi.function.Description;
import io.trino.spi.function.ScalarFunction;
import io.trino.spi.function.SqlNullable;
import io.trino.spi.function.SqlType;
import io.trino.spi.type.StandardTypes;
import java.nio.file.Path;

/**
 * {@code pii_decrypt(value)}: the column mask the compiled OPA policy gives users cleared to see
 * personal data. Trino checks no access on a plugin's functions, so any user could call it on a
 * ciphertext they hold: the function itself decides, by the session's user (the user the query
 * runs as: after impersonation, the impersonated one; inside a column mask, still the querying
 * user). Only the readers listed in the file named by {@value PiiReaders#ENV} get clear text;
 * anyone else gets PERMISSION_DENIED before anything is decrypted, and so does everyone while
 * that file cannot be read. The keys come from the Trino server's environment: {@value
 * #KEYSTORE_ENV} (the keystore JSON) and {@value #MASTER_KEY_ENV} (a file holding the base64
 * master key).
 */
public final class PiiFunctions {
    public static final String KEYSTORE_ENV = "LAKEHOUSE_KEYSTORE_FILE";
    public static final String MASTER_KEY_ENV = "LAKEHOUSE_MASTER_KEY_FILE";

    private static final Object LOCK = new Object();
    private static volatile PiiKeystore keystore;
    private static volatile PiiReaders readers;
    private static final PiiGuard GUARD = new PiiGuard(PiiFunctions::readers, PiiFunctions::keystore);

    private PiiFunctions() {}

    @ScalarFunction("pii_decrypt")
    @Description("The clear text of a pii:v1 value for a user cleared to read it; NULL once its data subject was forgotten")
    @SqlNullable
    @SqlType(StandardTypes.VARCHAR)
    public static Slice piiDecrypt(ConnectorSession session, @SqlNullable @SqlType(StandardTypes.VARCHAR) Slice value) {
        try {
            byte[] plain = GUARD.decrypt(session.getUser(), value == null ? null : value.getBytes());
            return plain == null ? null : Slices.wrappedBuffer(plain);
        } catch (PiiException exc) {
            throw new TrinoException(
                    exc.denied() ? PERMISSION_DENIED
                            : exc.configuration() ? CONFIGURATION_INVALID : INVALID_FUNCTION_ARGUMENT,
                    "pii_decrypt: " + exc.getMessage(),
                    exc);
        }
    }

    private static PiiReaders readers() {
        PiiReaders found = readers;
        if (found != null) {
            return found;
        }
        String file = System.getenv(PiiReaders.ENV);
        if (file == null || file.isBlank()) {
            throw PiiException.denied("nobody may decrypt personal data: the Trino server's environment lacks "
                    + PiiReaders.ENV + " (the file listing who may): start Trino with it set");
        }
        synchronized (LOCK) {
            if (readers == null) {
                readers = new PiiReaders(Path.of(file), System::nanoTime, PiiKeystore.REFRESH_NANOS);
            }
            return readers;
        }
    }

    private static PiiKeystore keystore() {
        PiiKeystore found = keystore;
        if (found != null) {
            return found;
        }
        synchronized (LOCK) {
            if (keystore == null) { // a failure is not remembered: the next call tries again
                keystore = PiiKeystore.open(setting(KEYSTORE_ENV, "the keystore JSON file"),
                        setting(MASTER_KEY_ENV, "a file holding the base64 master key"));
            }
            return keystore;
        }
    }

    private static Path setting(String variable, String what) {
        String value = System.getenv(variable);
        if (value == null || value.isBlank()) {
            throw PiiException.configuration("the Trino server's environment lacks " + variable + " (" + what
                    + "): start Trino with it set to decrypt personal data");
        }
        return Path.of(value);
    }
}
