// A JDBC client as a user's SQL tool would be: Trino's driver over TLS (the CA as a PEM trust
// store), a user and password; prints each row as tab-separated text. The password comes from
// the environment (TRINO_PASSWORD), never the command line.
// Run: java -cp trino-jdbc.jar JdbcQuery.java JDBC_URL USER SQL
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class JdbcQuery {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", System.getenv("TRINO_PASSWORD"));
        try (Connection connection = DriverManager.getConnection(args[0], properties);
                Statement statement = connection.createStatement();
                ResultSet rows = statement.executeQuery(args[2])) {
            int columns = rows.getMetaData().getColumnCount();
            while (rows.next()) {
                StringBuilder line = new StringBuilder();
                for (int i = 1; i <= columns; i++) {
                    line.append(i > 1 ? "\t" : "").append(rows.getString(i));
                }
                System.out.println(line);
            }
        } catch (SQLException e) {
            System.err.println("refused: " + e.getMessage());
            System.exit(3);
        }
    }
}
