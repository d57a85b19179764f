package io.lakehouse.trino.pii;

import static io.trino.spi.StandardErrorCode.CONFIGURATION_INVALID;
import static io.trino.spi.StandardErrorCode.INVALID_FUNCTION_ARGUMENT;

import io.airlift.slice.Slice;
import io.airlift.slice.Slices;
import io.trino.spi.TrinoException;
import io.trino.spi.function.Description;
import io.trino.spi.function.ScalarFunction;
import io.trino.spi.function.SqlNullable;
import io.trino.spi.function.SqlType;
import io.trino.spi.type.StandardTypes;
import java.nio.file.Path;

/**
 * {@code pii_decrypt(value)}: the column mask the compiled OPA policy gives users cleared to see
 * personal data. The keys come from the Trino server's environment: {@value #KEYSTORE_ENV} (the
 * keystore JSON) and {@value #MASTER_KEY_ENV} (a file holding the base64 master key).
 */
public final class PiiFunctions {
    public static final String KEYSTORE_ENV = "LAKEHOUSE_KEYSTORE_FILE";
    public static final String MASTER_KEY_ENV = "LAKEHOUSE_MASTER_KEY_FILE";

    private static final Object LOCK = new Object();
    private static volatile PiiKeystore keystore;

    private PiiFunctions() {}

    @ScalarFunction("pii_decrypt")
    @Description("The clear text of a pii:v1 value; NULL once its data subject was forgotten")
    @SqlNullable
    @SqlType(StandardTypes.VARCHAR)
    public static Slice piiDecrypt(@SqlNullable @SqlType(StandardTypes.VARCHAR) Slice value) {
        if (value == null) {
            return null;
        }
        try {
            byte[] plain = keystore().decrypt(value.getBytes());
            return plain == null ? null : Slices.wrappedBuffer(plain);
        } catch (PiiException exc) {
            throw new TrinoException(
                    exc.configuration() ? CONFIGURATION_INVALID : INVALID_FUNCTION_ARGUMENT,
                    "pii_decrypt: " + exc.getMessage(),
                    exc);
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
